"""`mlopsctl deploy`: ship the Spark jobs (scripts + the jobs' wheel) to Databricks, and the DAGs to an Airflow
DAGs folder."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from mlopsctl.commands._common import JsonOpt, app_context

app = typer.Typer(
    no_args_is_help=True,
    help="Deploy job files to Databricks and DAGs to an Airflow DAGs folder.",
    rich_markup_mode=None,
)

JOBS_PATH_VARIABLE = "MLOPSCTL_DATABRICKS_JOBS_PATH"
DEFAULT_UPLOAD_ROOT = "/Workspace/Shared/mlopsctl/jobs"


def _source(project_dir: Path, name: str, explicit: Path | None) -> Path:
    from mlopsctl import paths

    if explicit is not None:
        return explicit.expanduser().resolve()
    local = project_dir / name
    if local.is_dir():
        return local
    return paths.bundled_dags_dir() if name == "dags" else paths.bundled_spark_jobs_dir()


@app.command("jobs")
def deploy_jobs(
    ctx: typer.Context,
    to: Annotated[
        str,
        typer.Option("--to", help="Workspace folder (/Workspace/...) or UC volume (/Volumes/cat/schema/vol/...); "
                                  "a versioned sub-folder is created in it. [env: MLOPSCTL_DATABRICKS_UPLOAD_ROOT]",
                     envvar="MLOPSCTL_DATABRICKS_UPLOAD_ROOT", show_envvar=False),
    ] = DEFAULT_UPLOAD_ROOT,
    src: Annotated[
        Path | None, typer.Option("--src", help="Job files to upload (default: ./spark_jobs, else the bundled ones).",
                                     show_default=False)
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Version folder name (default: v<mlopsctl version>-<content "
                                                      "hash>).", show_default=False)
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", help="~/.databrickscfg profile. [env: DATABRICKS_CONFIG_PROFILE]",
                                    show_default=False)
    ] = None,
    set_variable: Annotated[
        bool, typer.Option("--set-variable", help=f"Also set the Airflow Variable {JOBS_PATH_VARIABLE} to the "
                                                  "uploaded path (the databricks backend reads it at run time).")
    ] = False,
    experiment_folder: Annotated[
        str, typer.Option("--experiment-folder",
                          help="Workspace folder of the DAGs' MLflow experiments (under /Shared/ or /Users/), "
                               "created if missing; the Airflow workers need the same value. "
                               "[env: MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX]",
                          envvar="MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX", show_envvar=False)
    ] = "/Shared/mlopsctl",
    cluster_id: Annotated[
        str | None, typer.Option("--cluster-id",
                                 help="The existing cluster the tasks run on (MLOPSCTL_DATABRICKS_COMPUTE=existing): "
                                      "warn when it still holds another jobs' wheel or MLflow. "
                                      "[env: MLOPSCTL_DATABRICKS_CLUSTER_ID]",
                                 envvar="MLOPSCTL_DATABRICKS_CLUSTER_ID", show_envvar=False, show_default=False)
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Upload the job scripts and the jobs' wheel to a versioned Databricks path the DAGs run from, and
    create the experiments' folder.

    The wheel (mlopsctl_jobs-<version>-py3-none-any.whl) holds the package spark_jobs/mlopsctl_jobs/, which
    the tasks install and import; the package's files are not uploaded. It is the one bundled with mlopsctl
    when the project's mlopsctl_jobs/ and spark_jobs/pyproject.toml are the stock ones, else built from them
    (hatchling). A spark_jobs/ with the older layout (a shared rf_core.py) is refused with the upgrade step.

    The version folder is derived from the files' content, so re-deploying unchanged jobs reuses the
    same path and running DAG runs never see files change under them. The wheel's version follows the
    folder (v0.1.0-<hash> -> 0.1.0+<hash>), and the tasks refuse to run another one: a cluster keeps the
    first version of a library it installed until it restarts. With --cluster-id, that cluster's libraries
    are read and a leftover jobs' wheel or another MLflow is reported with the restart it needs.

    Example: mlopsctl deploy jobs --to /Volumes/main/mlops/jobs --set-variable
    """
    import tempfile

    from mlopsctl import __version__, jobs_wheel
    from mlopsctl import databricks as dbx

    app_ctx = app_context(ctx, json_output)
    console = app_ctx.console
    target = dbx.validate_target(to)
    folder = dbx.validate_experiment_folder(experiment_folder)
    source = _source(app_ctx.settings.project_dir, "spark_jobs", src)
    dbx.job_files(source)  # a missing or empty folder is reported before anything is built
    with tempfile.TemporaryDirectory(prefix="mlopsctl-jobs-wheel-") as build_dir:
        wheel = jobs_wheel.for_deploy(source, __version__, Path(build_dir))
        ver = version or dbx.content_version(dbx.deploy_files(source, wheel.path, wheel.modules),
                                             prefix=f"v{__version__}")
        try:
            wheel_version = jobs_wheel.wheel_version(ver)
        except ValueError as exc:
            from mlopsctl.errors import InputError

            raise InputError(f"--version: {exc}.", hint="Leave it out to name the folder after the files' "
                                                        "content.") from None
        versioned = jobs_wheel.with_version(wheel.path, wheel_version, Path(build_dir) / "versioned")
        mlflow = jobs_wheel.requirement(versioned, "mlflow")
        files = dbx.deploy_files(source, versioned, wheel.modules)
        client = dbx.workspace_client(profile)
        console.status_line(f"Uploading {len(files)} file(s) from {source} to {client.config.host} ...")
        dest, uploaded = dbx.upload_jobs(client, files, target, ver)
    folder = dbx.ensure_experiment_folder(client, folder)
    result: dict[str, Any] = {"path": dest, "files": uploaded, "wheel": f"{dest}/{versioned.name}",
                              "wheel_origin": wheel.origin, "wheel_version": wheel_version, "version": ver,
                              "host": client.config.host, "experiment_folder": folder, "variable_set": False}
    if cluster_id:
        result["cluster"] = _cluster_check(client, cluster_id, wheel_version, mlflow)
    if set_variable:
        app_ctx.airflow.set_variable(JOBS_PATH_VARIABLE, dest)
        result["variable_set"] = True
    if app_ctx.json_mode:
        console.json(result)
        return
    console.success(f"Uploaded {len(uploaded)} file(s) to {dest}")
    for path in uploaded:
        console.print(f"  {path}", markup=False)
    origin = "bundled with mlopsctl" if wheel.origin == "bundled" else f"built from {source}"
    console.info(f"Jobs wheel ({origin}): {result['wheel']}")
    console.info(f"MLflow experiments folder: {folder}")
    if set_variable:
        console.info(f"Airflow Variable {JOBS_PATH_VARIABLE} = {dest}")
    else:
        console.info(f"Point the DAGs at it: set {JOBS_PATH_VARIABLE}={dest} on the Airflow components "
                     f"(or re-run with --set-variable).")
    check = result.get("cluster")
    if check and check["error"]:
        console.warn(f"Could not read the libraries of cluster {cluster_id}: {check['error']}")
    elif check and check["stale"]:
        console.warn(f"Cluster {cluster_id} still holds " + "; ".join(check["stale"]) + ". A cluster keeps the "
                     f"first version of a library it installed until it restarts, and the tasks of this deploy "
                     f"refuse to run on another jobs' wheel: restart it (`databricks clusters restart "
                     f"{cluster_id}`) before running them.")


def _cluster_check(client: Any, cluster_id: str, version: str, mlflow: str | None) -> dict[str, Any]:
    """{"id", "stale": what the cluster holds that the deployed tasks would not run with, "error"}: a
    failed read is reported, not raised (the upload is done)."""
    from mlopsctl import databricks as dbx
    from mlopsctl import jobs_wheel
    from mlopsctl.errors import MlopsctlError

    try:
        statuses = dbx.cluster_libraries(client, cluster_id)
    except MlopsctlError as exc:
        return {"id": cluster_id, "stale": [], "error": exc.message}
    return {"id": cluster_id, "stale": jobs_wheel.stale_libraries(statuses, version, mlflow), "error": None}


def _sync_tree(src: Path, dest: Path) -> dict[str, list[str]]:
    """Copy src's files into dest (no deletes); returns {added, updated, unchanged} relative paths."""
    summary: dict[str, list[str]] = {"added": [], "updated": [], "unchanged": []}
    for path in sorted(src.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        rel = path.relative_to(src)
        target = dest / rel
        if target.is_file():
            if filecmp.cmp(path, target, shallow=False):
                summary["unchanged"].append(rel.as_posix())
                continue
            kind = "updated"
        else:
            kind = "added"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.mlopsctl-tmp")
        shutil.copy2(path, tmp)
        tmp.replace(target)  # atomic: a DAG processor never parses a half-written file
        summary[kind].append(rel.as_posix())
    return summary


@app.command("dags")
def deploy_dags(
    ctx: typer.Context,
    to: Annotated[Path, typer.Option("--to", help="The Airflow DAGs folder (mounted volume or git-sync checkout).")],
    jobs_to: Annotated[
        Path | None,
        typer.Option("--jobs-to", help="Where spark_jobs/ goes (default: spark_jobs/ next to the DAGs folder).",
                     show_default=False),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Copy dags/ (and spark_jobs/) into a DAGs folder that Airflow reads; files are replaced atomically,
    nothing is deleted.

    Example: mlopsctl deploy dags --to /mnt/airflow/dags
    """
    from mlopsctl.errors import ConfigError

    app_ctx = app_context(ctx, json_output)
    console = app_ctx.console
    project = app_ctx.settings.project_dir
    dags_src = _source(project, "dags", None)
    jobs_src = _source(project, "spark_jobs", None)
    dest = to.expanduser().resolve()
    jobs_dest = (jobs_to.expanduser().resolve() if jobs_to else dest.parent / "spark_jobs")
    if not dags_src.is_dir():
        raise ConfigError(f"No dags/ folder at {dags_src}.", hint="Run from the project root (mlopsctl init).")
    if dest == dags_src.resolve():
        raise ConfigError(f"--to {dest} is the source dags/ folder itself.")
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"--to {dest} exists and is not a directory.")
    dest.mkdir(parents=True, exist_ok=True)
    result = {"dags_folder": str(dest), "dags": _sync_tree(dags_src, dest)}
    if jobs_src.is_dir() and jobs_dest != jobs_src.resolve():
        jobs_dest.mkdir(parents=True, exist_ok=True)
        result["spark_jobs_folder"] = str(jobs_dest)
        result["spark_jobs"] = _sync_tree(jobs_src, jobs_dest)
    if app_ctx.json_mode:
        console.json(result)
        return
    for key, folder_key in (("dags", "dags_folder"), ("spark_jobs", "spark_jobs_folder")):
        if key not in result:
            continue
        s = result[key]
        console.success(f"{key} -> {result[folder_key]}: {len(s['added'])} added, {len(s['updated'])} updated, "
                        f"{len(s['unchanged'])} unchanged")
        for kind in ("added", "updated"):
            for rel in s[kind]:
                console.print(f"  {kind:<8} {rel}", markup=False)
    if "spark_jobs_folder" in result:
        console.info(f"If Airflow does not find the jobs there, set MLOPSCTL_SPARK_JOBS_DIR="
                     f"{result['spark_jobs_folder']} on its components.")
