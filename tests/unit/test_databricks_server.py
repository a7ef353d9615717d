"""The Databricks test server answers the real databricks-sdk the way a workspace does."""

from __future__ import annotations

import io
import textwrap

import httpx
import pytest

from tests.fixtures.databricks_server import (
    TEST_CLUSTER_ID,
    DatabricksTestServer,
    databricks_server,  # noqa: F401 - fixture
)


@pytest.fixture
def sdk(databricks_server: DatabricksTestServer):  # noqa: F811
    from databricks.sdk import WorkspaceClient

    return WorkspaceClient(host=databricks_server.url, token=databricks_server.token)


def test_bearer_token_is_checked(databricks_server: DatabricksTestServer) -> None:  # noqa: F811
    url = f"{databricks_server.url}/api/2.0/preview/scim/v2/Me"
    missing = httpx.get(url)
    assert missing.status_code == 401
    assert missing.json()["error_code"] == "UNAUTHENTICATED"
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert wrong.json() == {"error_code": "PERMISSION_DENIED", "message": "Invalid access token."}
    ok = httpx.get(url, headers={"Authorization": f"Bearer {databricks_server.token}"})
    assert ok.status_code == 200
    assert ok.json()["userName"] == databricks_server.user


def test_unknown_endpoint_is_a_databricks_error(databricks_server: DatabricksTestServer) -> None:  # noqa: F811
    resp = httpx.get(f"{databricks_server.url}/api/2.0/clusters/list",
                     headers={"Authorization": f"Bearer {databricks_server.token}"})
    assert resp.status_code == 404
    assert resp.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_sdk_me_and_uploads_land_where_python_file_points(sdk, databricks_server) -> None:  # noqa: F811
    from databricks.sdk.service.workspace import ImportFormat

    assert sdk.current_user.me().user_name == databricks_server.user
    sdk.workspace.mkdirs("/Shared/jobs")
    sdk.workspace.upload("/Shared/jobs/a.py", io.BytesIO(b"print('a')\n"), format=ImportFormat.AUTO, overwrite=True)
    sdk.workspace.import_("/Shared/jobs/b.py", content="cHJpbnQoJ2InKQo=", format=ImportFormat.AUTO, overwrite=True)
    sdk.files.upload("/Volumes/main/s/v/c.py", io.BytesIO(b"print('c')\n"), overwrite=True)
    assert databricks_server.workspace_path("/Workspace/Shared/jobs/a.py").read_text() == "print('a')\n"
    assert databricks_server.workspace_path("/Shared/jobs/b.py").read_text() == "print('b')\n"
    assert databricks_server.workspace_path("/Volumes/main/s/v/c.py").read_text() == "print('c')\n"
    # A SOURCE import with a language is a notebook: the extension goes, as on Databricks.
    from databricks.sdk.service.workspace import Language

    sdk.workspace.upload("/Shared/jobs/nb.py", io.BytesIO(b"1"), format=ImportFormat.SOURCE,
                         language=Language.PYTHON, overwrite=True)
    assert databricks_server.workspace_path("/Shared/jobs/nb").is_file()


def test_import_without_overwrite_conflicts_and_missing_parent_is_404(sdk) -> None:
    from databricks.sdk.errors import NotFound, ResourceAlreadyExists
    from databricks.sdk.service.workspace import ImportFormat

    sdk.workspace.mkdirs("/Shared/x")
    sdk.workspace.upload("/Shared/x/a.py", io.BytesIO(b"1"), format=ImportFormat.AUTO)
    with pytest.raises(ResourceAlreadyExists):
        sdk.workspace.upload("/Shared/x/a.py", io.BytesIO(b"2"), format=ImportFormat.AUTO)
    with pytest.raises(NotFound):
        sdk.workspace.upload("/Shared/nope/a.py", io.BytesIO(b"2"), format=ImportFormat.AUTO)


def test_429_and_503_bursts_are_retried_by_the_sdk(sdk, databricks_server) -> None:  # noqa: F811
    databricks_server.inject(429, times=2, path_prefix="/api/2.0/preview/scim")
    databricks_server.inject(503, times=1, path_prefix="/api/2.0/preview/scim")
    assert sdk.current_user.me().user_name == databricks_server.user
    me_calls = [p for _, p in databricks_server.requests if p == "/api/2.0/preview/scim/v2/Me"]
    assert len(me_calls) == 4
    assert databricks_server.pending_faults() == 0


def test_fault_control_endpoint(databricks_server) -> None:  # noqa: F811
    resp = httpx.post(f"{databricks_server.url}/_test/faults", json={"status": 500, "times": 1})
    assert resp.json() == {"pending": 1}
    hit = httpx.get(f"{databricks_server.url}/api/2.0/preview/scim/v2/Me",
                    headers={"Authorization": f"Bearer {databricks_server.token}"})
    assert hit.status_code == 500 and hit.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_submit_validates_the_payload(databricks_server) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {databricks_server.token}"}
    url = f"{databricks_server.url}/api/2.2/jobs/runs/submit"
    bad_params = {"run_name": "x", "existing_cluster_id": TEST_CLUSTER_ID,
                  "spark_python_task": {"python_file": "/Workspace/a.py", "parameters": [1]}}
    resp = httpx.post(url, json=bad_params, headers=headers)
    assert resp.status_code == 400 and "list of strings" in resp.json()["message"]
    undefined_env = {"tasks": [{"task_key": "t", "environment_key": "missing",
                                "spark_python_task": {"python_file": "/Workspace/a.py"}}]}
    resp = httpx.post(url, json=undefined_env, headers=headers)
    assert resp.status_code == 400 and "missing" in resp.json()["message"]
    no_compute = {"tasks": [{"task_key": "t", "spark_python_task": {"python_file": "/Workspace/a.py"}}]}
    resp = httpx.post(url, json=no_compute, headers=headers)
    assert resp.status_code == 400 and "environment_key" in resp.json()["message"]
    resp = httpx.get(f"{databricks_server.url}/api/2.2/jobs/runs/get", params={"run_id": 99999}, headers=headers)
    assert resp.status_code == 400 and resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_missing_python_file_fails_the_run(sdk, databricks_server) -> None:  # noqa: F811
    from databricks.sdk.service.jobs import RunResultState, SparkPythonTask, SubmitTask

    run = sdk.jobs.submit(run_name="missing", tasks=[SubmitTask(
        task_key="t", existing_cluster_id=TEST_CLUSTER_ID, spark_python_task=SparkPythonTask(python_file="/Workspace/none.py"))]
    ).result()
    assert run.state.result_state == RunResultState.FAILED
    out = sdk.jobs.get_run_output(run.tasks[0].run_id)
    assert "does not exist" in out.error


def test_spark_python_task_runs_for_real_success_and_failure(sdk, databricks_server, tmp_path) -> None:  # noqa: F811
    """spark-submit runs the uploaded file with the parameters; a Python error becomes the run's error."""
    from databricks.sdk.service.jobs import RunLifeCycleState, RunResultState, SparkPythonTask, SubmitTask
    from databricks.sdk.service.workspace import ImportFormat

    job = textwrap.dedent("""
        import sys
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        n = spark.range(int(sys.argv[1])).count()
        print(f"COUNT={n} MASTER={spark.sparkContext.master}")
        if sys.argv[2] == "fail":
            raise ValueError("boom from the job")
        spark.stop()
    """).encode()
    sdk.workspace.mkdirs("/Shared/jobs")
    sdk.workspace.upload("/Shared/jobs/count.py", io.BytesIO(job), format=ImportFormat.AUTO, overwrite=True)
    ok = sdk.jobs.submit(run_name="ok", tasks=[SubmitTask(
        task_key="count", existing_cluster_id=TEST_CLUSTER_ID,
        spark_python_task=SparkPythonTask(python_file="/Workspace/Shared/jobs/count.py", parameters=["7", "ok"]))])
    failed = sdk.jobs.submit(run_name="bad", tasks=[SubmitTask(
        task_key="count", existing_cluster_id=TEST_CLUSTER_ID,
        spark_python_task=SparkPythonTask(python_file="/Workspace/Shared/jobs/count.py", parameters=["3", "fail"]))])
    ok_run = ok.result()
    assert ok_run.state.life_cycle_state == RunLifeCycleState.TERMINATED
    assert ok_run.state.result_state == RunResultState.SUCCESS
    assert "COUNT=7 MASTER=local[2]" in sdk.jobs.get_run_output(ok_run.tasks[0].run_id).logs
    bad_run = failed.result()  # the SDK returns (does not raise) on FAILED
    assert bad_run.state.result_state == RunResultState.FAILED
    out = sdk.jobs.get_run_output(bad_run.tasks[0].run_id)
    assert "ValueError: boom from the job" in out.logs and "COUNT=3" in out.logs
    assert "boom" not in out.error  # Databricks' error is unstructured: the job's own words are in logs


_PY = {"python_file": "/Workspace/a.py", "parameters": ["1"]}
_CLUSTER = {"spark_version": "17.3.x-cpu-ml-scala2.13", "node_type_id": "i3.xlarge", "num_workers": 1,
            "data_security_mode": "SINGLE_USER"}
_ENV = {"environment_key": "e", "spec": {"environment_version": "4", "dependencies": ["mlflow>=3.1"]}}


@pytest.mark.parametrize(("body", "expected"), [
    # the SDK's types drop these on a from_dict/as_dict round trip: a misspelled or unsupported field
    ({"timeout_secs": 5, "tasks": [{"task_key": "t", "existing_cluster_id": "c", "spark_python_task": _PY}]},
     "timeout_secs"),
    ({"tasks": [{"task_key": "t", "new_cluster": {**_CLUSTER, "node_typ": "x"}, "spark_python_task": _PY}]},
     "new_cluster.node_typ"),
    ({"tasks": [{"task_key": "t", "new_cluster": {**_CLUSTER, "data_security_mode": "PRIVATE"},
                 "spark_python_task": _PY}]}, "data_security_mode"),
    ({"tasks": [{"task_key": "t", "existing_cluster_id": "c", "spark_python_task": {**_PY, "argv": ["x"]}}]},
     "spark_python_task.argv"),
    ({"timeout_seconds": "soon", "tasks": [{"task_key": "t", "existing_cluster_id": "c", "spark_python_task": _PY}]},
     "timeout_seconds"),
    # what the Jobs API refuses
    ({"environments": [_ENV], "tasks": [{"task_key": "t", "environment_key": "e", "spark_python_task": _PY,
                                         "libraries": [{"pypi": {"package": "mlflow>=3.1"}}]}]}, "libraries"),
    ({"environments": [_ENV], "tasks": [{"task_key": "t", "spark_python_task": _PY}]}, "environment_key"),
    ({"environments": [{"environment_key": "e", "spec": {"client": "2"}}],
      "tasks": [{"task_key": "t", "environment_key": "e", "spark_python_task": _PY}]}, "environment_version"),
    ({"tasks": [{"task_key": "t", "new_cluster": {"spark_version": "17.3.x-cpu-ml-scala2.13", "num_workers": 1},
                 "spark_python_task": _PY}]}, "node_type_id"),
    ({"tasks": [{"task_key": "t", "new_cluster": {"node_type_id": "i3.xlarge", "num_workers": 1},
                 "spark_python_task": _PY}]}, "spark_version"),
    ({"idempotency_token": "x" * 65, "tasks": [{"task_key": "t", "existing_cluster_id": "c",
                                                "spark_python_task": _PY}]}, "idempotency_token"),
])
def test_submit_refuses_what_a_workspace_refuses(databricks_server, body, expected) -> None:  # noqa: F811
    resp = httpx.post(f"{databricks_server.url}/api/2.2/jobs/runs/submit", json=body,
                      headers={"Authorization": f"Bearer {databricks_server.token}"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert expected in resp.json()["message"]
    assert databricks_server.runs() == []


def test_submit_accepts_the_full_payload_of_each_compute_kind(databricks_server) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {databricks_server.token}"}
    url = f"{databricks_server.url}/api/2.2/jobs/runs/submit"
    single_node = {**_CLUSTER, "num_workers": 0, "spark_conf": {"spark.databricks.cluster.profile": "singleNode"},
                   "custom_tags": {"ResourceClass": "SingleNode"}}
    for body in (
        {"run_name": "r", "timeout_seconds": 60, "idempotency_token": "a" * 64,
         "tasks": [{"task_key": "t", "new_cluster": single_node, "spark_python_task": _PY,
                    "libraries": [{"pypi": {"package": "mlflow>=3.1,<4"}}]}]},
        {"environments": [_ENV], "tasks": [{"task_key": "t", "environment_key": "e", "spark_python_task": _PY}]},
    ):
        resp = httpx.post(url, json=body, headers=headers)
        assert resp.status_code == 200, resp.text
    databricks_server.wait_idle()


def test_idempotency_token_launches_exactly_one_run(sdk, databricks_server) -> None:  # noqa: F811
    from databricks.sdk.service.jobs import SparkPythonTask, SubmitTask

    task = SubmitTask(task_key="t", existing_cluster_id=TEST_CLUSTER_ID,
                      spark_python_task=SparkPythonTask(python_file="/Workspace/none.py"))
    first = sdk.jobs.submit(run_name="a", tasks=[task], idempotency_token="tok-1").run_id
    again = sdk.jobs.submit(run_name="a", tasks=[task], idempotency_token="tok-1").run_id
    other = sdk.jobs.submit(run_name="a", tasks=[task], idempotency_token="tok-2").run_id
    assert first == again != other
    assert len(databricks_server.runs()) == 2
    databricks_server.wait_idle()


def test_get_output_logs_are_the_job_streams_and_error_is_not_made_from_them(sdk, databricks_server) -> None:  # noqa: F811
    from databricks.sdk.service.jobs import RunResultState, SparkPythonTask, SubmitTask
    from databricks.sdk.service.workspace import ImportFormat

    job = b"import sys\nprint('to stdout')\nprint('mlopsctl-error: bad column', file=sys.stderr)\nsys.exit(3)\n"
    sdk.workspace.mkdirs("/Shared/jobs")
    sdk.workspace.upload("/Shared/jobs/bad.py", io.BytesIO(job), format=ImportFormat.AUTO, overwrite=True)
    run = sdk.jobs.submit(run_name="bad", tasks=[SubmitTask(
        task_key="t", existing_cluster_id=TEST_CLUSTER_ID,
        spark_python_task=SparkPythonTask(python_file="/Workspace/Shared/jobs/bad.py"))]).result()
    assert run.state.result_state == RunResultState.FAILED
    out = sdk.jobs.get_run_output(run.tasks[0].run_id)
    assert "to stdout" in out.logs and "mlopsctl-error: bad column" in out.logs  # stdout and stderr
    assert out.error and "bad column" not in out.error and "mlopsctl-error" not in out.error


def test_existing_clusters_come_from_the_registry(sdk, databricks_server) -> None:  # noqa: F811
    from databricks.sdk.errors import InvalidParameterValue, ResourceDoesNotExist
    from databricks.sdk.service.jobs import SparkPythonTask, SubmitTask

    cluster = sdk.clusters.get(TEST_CLUSTER_ID)
    assert cluster.cluster_id == TEST_CLUSTER_ID and "-ml-" in cluster.spark_version
    # 400 INVALID_PARAMETER_VALUE "Cluster ... does not exist": the SDK's own override makes it a 404 kind
    with pytest.raises(ResourceDoesNotExist, match="does not exist"):
        sdk.clusters.get("0000-nope")
    with pytest.raises(InvalidParameterValue, match="Cluster 0000-nope does not exist"):
        sdk.jobs.submit(run_name="x", tasks=[SubmitTask(task_key="t", existing_cluster_id="0000-nope",
                                                        spark_python_task=SparkPythonTask(python_file="/a.py"))])
    assert databricks_server.runs() == []


@pytest.mark.parametrize(("dependencies", "expected"), [
    (["pyspark==3.5.1"], "the environment provides PySpark"),
    (["/Volumes/main/default/libs/missing-1.0-py3-none-any.whl"], "does not exist"),
    (["not a requirement!"], "not a valid requirement"),
])
def test_undeclarable_dependencies_fail_the_run(sdk, databricks_server, dependencies, expected) -> None:  # noqa: F811
    from databricks.sdk.service.compute import Environment
    from databricks.sdk.service.jobs import JobEnvironment, RunResultState, SparkPythonTask, SubmitTask

    sdk.files.upload("/Volumes/main/default/jobs/j.py", io.BytesIO(b"print('ran')\n"), overwrite=True)
    run = sdk.jobs.submit(
        run_name="deps",
        environments=[JobEnvironment(environment_key="e", spec=Environment(environment_version="4",
                                                                           dependencies=dependencies))],
        tasks=[SubmitTask(task_key="t", environment_key="e",
                          spark_python_task=SparkPythonTask(python_file="/Volumes/main/default/jobs/j.py"))],
    ).result()
    assert run.state.result_state == RunResultState.FAILED
    assert expected in run.state.state_message
    assert databricks_server.executions == []  # nothing ran: the environment could not be made


def test_a_lost_submit_response_is_found_by_the_retry_with_the_same_token(databricks_server) -> None:  # noqa: F811
    """The run is created, the client sees a 500, its retry with the same token gets that run: one execution."""
    headers = {"Authorization": f"Bearer {databricks_server.token}"}
    base = databricks_server.url
    httpx.post(f"{base}/api/2.0/workspace/mkdirs", json={"path": "/Shared/jobs"}, headers=headers)
    httpx.post(f"{base}/api/2.0/workspace/import", headers=headers, json={
        "path": "/Shared/jobs/hello.py", "format": "AUTO", "overwrite": True, "content": "cHJpbnQoJ2hlbGxvJykK"})
    body = {"run_name": "lost", "idempotency_token": "lost-1", "tasks": [{
        "task_key": "t", "existing_cluster_id": TEST_CLUSTER_ID,
        "spark_python_task": {"python_file": "/Workspace/Shared/jobs/hello.py"}}]}
    databricks_server.inject(500, path_prefix="/api/2.2/jobs/runs/submit", lost_response=True)
    lost = httpx.post(f"{base}/api/2.2/jobs/runs/submit", json=body, headers=headers)
    assert lost.status_code == 500 and lost.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    [created] = databricks_server.runs()  # the run exists although the client never learnt its id
    retry = httpx.post(f"{base}/api/2.2/jobs/runs/submit", json=body, headers=headers)
    assert retry.status_code == 200 and retry.json() == {"run_id": created.run_id}
    databricks_server.wait_idle()
    assert databricks_server.runs() == [created]
    assert databricks_server.executions == [created.tasks[0].run_id]
    assert created.tasks[0].result_state == "SUCCESS" and "hello" in created.tasks[0].logs


def test_the_sdk_retries_a_lost_503_into_the_same_run(sdk, databricks_server) -> None:  # noqa: F811
    from databricks.sdk.service.jobs import SparkPythonTask, SubmitTask

    databricks_server.inject(503, path_prefix="/api/2.2/jobs/runs/submit", lost_response=True)
    run_id = sdk.jobs.submit(run_name="lost", idempotency_token="lost-2", tasks=[SubmitTask(
        task_key="t", existing_cluster_id=TEST_CLUSTER_ID,
        spark_python_task=SparkPythonTask(python_file="/Workspace/none.py"))]).run_id
    submits = [p for _, p in databricks_server.requests if p == "/api/2.2/jobs/runs/submit"]
    assert len(submits) == 2 and databricks_server.pending_faults() == 0
    assert [r.run_id for r in databricks_server.runs()] == [run_id]
    databricks_server.wait_idle()


def test_existing_clusters_keep_their_libraries_until_a_restart(sdk, databricks_server) -> None:  # noqa: F811
    """A running cluster keeps what its tasks installed, and the first version of each distribution: a task
    asking for another version runs with the first (SKIPPED), until a restart forgets them all."""
    from databricks.sdk.errors import InvalidParameterValue

    libraries = databricks_server.cluster_libraries
    old = {"whl": "/Volumes/main/mlops/jobs/v0.1.0-aaa/mlopsctl_jobs-0.1.0+aaa-py3-none-any.whl"}
    new = {"whl": "/Volumes/main/mlops/jobs/v0.1.0-bbb/mlopsctl_jobs-0.1.0+bbb-py3-none-any.whl"}
    mlflow, other_mlflow, xgboost = ({"pypi": {"package": p}} for p in ("mlflow==3.17.2", "mlflow>=3.1,<4", "xgboost"))
    assert libraries.attach(TEST_CLUSTER_ID, [old, mlflow]) == [old, mlflow]
    assert libraries.attach(TEST_CLUSTER_ID, [new, other_mlflow, xgboost]) == [old, mlflow, xgboost]
    statuses = [st.as_dict() for st in sdk.libraries.cluster_status(TEST_CLUSTER_ID)]
    assert [(st["library"], st["status"]) for st in statuses] == [
        (old, "INSTALLED"), (mlflow, "INSTALLED"), (new, "SKIPPED"), (other_mlflow, "SKIPPED"), (xgboost, "INSTALLED")]
    assert "mlopsctl_jobs-0.1.0+aaa" in statuses[2]["messages"][0] and "restart" in statuses[2]["messages"][0]
    sdk.clusters.restart_and_wait(TEST_CLUSTER_ID)
    assert list(sdk.libraries.cluster_status(TEST_CLUSTER_ID)) == []
    assert libraries.attach(TEST_CLUSTER_ID, [new]) == [new]
    for call in (lambda: list(sdk.libraries.cluster_status("0000-nope")), lambda: sdk.clusters.restart("0000-nope")):
        with pytest.raises(InvalidParameterValue, match="0000-nope does not exist"):
            call()


def test_every_rule_of_the_stand_in_is_documented_with_its_source() -> None:
    """tests/fixtures/databricks/rules.py is the table; docs/databricks.md shows each row with its source."""
    from pathlib import Path

    from tests.fixtures.databricks.rules import RULES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "databricks.md").read_text()
    for rule in RULES:
        assert f"| {rule.name} |" in doc, rule.name
        first = rule.source.split()[0].rstrip(";")  # a docs URL, or the repository of the file that says it
        assert first.rstrip("/").rsplit("/", 1)[-1] in doc, rule.name
