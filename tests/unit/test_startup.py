"""CLI start-up stays light: importing the CLI loads none of the heavy libraries its commands use."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("airflow", "mlflow", "pyspark", "databricks", "rich", "httpx", "pydantic", "sklearn", "pandas")


def test_importing_the_cli_loads_no_heavy_library() -> None:
    probe = (
        "import json, sys, mlopsctl.cli; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout) == []
