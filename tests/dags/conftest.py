"""Parse the repo's dags/ folder once per session with Airflow's own DagBag."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


def parse_dags() -> Any:
    if str(DAGS_DIR) not in sys.path:  # Airflow puts the dags folder on sys.path; so do the tests
        sys.path.append(str(DAGS_DIR))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR, bundle_name="dags-folder")


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("airflow_home")


@pytest.fixture(scope="session")
def dagbag(airflow_home: Path) -> Any:
    """The DagBag of dags/, parsed once for the session's tests (which read it and do not change it), in an
    environment set for the parse only: no MLOPSCTL_*/DATABRICKS_* variable of the caller's changes the DAGs."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("MLOPSCTL_", "DATABRICKS_")):
                mp.delenv(key)
        mp.setenv("AIRFLOW_HOME", str(airflow_home))
        mp.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        return parse_dags()
