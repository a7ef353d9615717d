"""Hatch build hook: mlopsctl's wheel carries the jobs' wheel (``mlopsctl-jobs``: spark_jobs/mlopsctl_jobs/) as
package data under ``mlopsctl/_bundled/wheels/``, so `mlopsctl deploy jobs` uploads it from a CLI-only
install, with no build backend.

The jobs' wheel is built by mlopsctl/jobs_wheel.py with hatchling's own wheel builder, from
spark_jobs/pyproject.toml, at mlopsctl's version; that file is loaded by path, as mlopsctl is not
importable in the build environment. Editable installs skip it: there `deploy jobs` builds the wheel from
the checkout's spark_jobs/.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

WHEELS_DIR = "mlopsctl/_bundled/wheels"


def _jobs_wheel_module(root: str) -> Any:
    name = "_mlopsctl_build_jobs_wheel"
    spec = importlib.util.spec_from_file_location(name, Path(root, "mlopsctl", "jobs_wheel.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # NamedTuple and friends resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


class JobsWheelHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._tmp: str | None = None
        if version == "editable":
            return
        self._tmp = tempfile.mkdtemp(prefix="mlopsctl-jobs-wheel-")
        jobs_wheel = _jobs_wheel_module(self.root)
        wheel = jobs_wheel.build(Path(self.root, "spark_jobs"), Path(self._tmp), self.metadata.version)
        build_data["force_include"][str(wheel)] = f"{WHEELS_DIR}/{wheel.name}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
