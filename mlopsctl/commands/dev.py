"""`mlopsctl dev start|stop|status|logs`: the embedded local stack (Airflow 3, MLflow and a Spark Connect
server on 127.0.0.1)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from mlopsctl.appcontext import AppContext
from mlopsctl.commands._common import JsonOpt, app_context
from mlopsctl.devenv import components
from mlopsctl.devenv.process import STOP_GRACE
from mlopsctl.devenv.stack import HELPERS
from mlopsctl.errors import InputError
from mlopsctl.extras import require_local_extra

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="The embedded local stack: real Airflow 3 (api-server, scheduler, dag-processor, triggerer), an "
    "MLflow server and a Spark Connect server (spark) on 127.0.0.1, state under <project>/.mlopsctl. "
    "No Docker.",
)


def with_port_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command one `--<x>-port` option per component port setting (`mlopsctl.devenv.components`), its
    env var named in the help; the command receives the ports given as ``ports`` (setting -> port)."""
    settings = [c.port for c in components.with_ports() if c.port is not None]
    options = {
        p.setting: inspect.Parameter(
            p.setting, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[int | None, typer.Option(
                p.flag, min=1, max=65535, help=f"{p.what} port. [env: {p.env_var}]", show_default=False,
            )],
        )
        for p in settings
    }

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        ports = {name: kwargs.pop(name) for name in options}
        command(*args, ports=ports, **kwargs)

    params = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "ports"]
    ctx, rest = params[0], [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params[1:]]
    wrapper.__signature__ = inspect.Signature([ctx, *options.values(), *rest])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**command.__annotations__, **{n: p.annotation for n, p in options.items()}}
    wrapper.__annotations__.pop("ports", None)
    return wrapper


def _with_ports(actx: AppContext, ports: dict[str, int | None]) -> None:
    given = {key: value for key, value in ports.items() if value is not None}
    if given:
        actx.overrides.update(given)
        actx.__dict__.pop("settings", None)


def _print_urls(actx: AppContext, urls: dict[str, str], passwords_file: Any, username: str) -> None:
    """One line per component with a URL line: label, URL, note."""
    for c in components.components():
        if c.url is not None and c.url.key in urls:
            note = c.url.note.format(username=username, passwords_file=passwords_file)
            actx.console.print(f"{c.url.label:<11} {urls[c.url.key]}" + (f"   {note}" if note else ""), soft_wrap=True)


@app.command()
@with_port_options
def start(
    ctx: typer.Context,
    ports: dict[str, int | None],
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            help="Seconds to wait for health. [env: MLOPSCTL_START_TIMEOUT]",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Start the local stack and wait until every component is healthy and the DAGs are parsed.

    Idempotent: an already running stack is left alone; a crashed component is started again.

    Example: mlopsctl dev start   (then open http://127.0.0.1:8080, user admin)
    """
    require_local_extra("dev start")
    from mlopsctl.console import StackProgress
    from mlopsctl.devenv.health import last_line
    from mlopsctl.devenv.start import start_stack

    actx = app_context(ctx, json_output)
    _with_ports(actx, ports)
    settings = actx.settings
    with StackProgress(actx.console) as progress:
        result = start_stack(settings, on_progress=progress, timeout=timeout)
    console = actx.console
    if json_output:
        console.json(result.as_dict())
        return
    if result.already_running:
        console.success("The local stack is already running and healthy.")
    else:
        console.success(f"Local stack started in {result.seconds:.1f} s ({', '.join(result.started)}).")
    for name, trace in result.import_errors.items():
        console.warn(f"DAG file {name} failed to import: {last_line(trace)}")
    if result.import_errors:
        console.info("  See the full traces with `mlopsctl check` or in the Airflow UI.")
    _print_urls(actx, result.urls, result.passwords_file, result.username)
    n_dags = sum(len(v) for v in result.dags.values())
    console.print(f"DAGs        {n_dags} from {result.dags_folder}", soft_wrap=True)
    console.info(
        "Stop it with `mlopsctl dev stop`; follow a component's log with `mlopsctl dev logs scheduler -f`."
    )


@app.command()
def stop(
    ctx: typer.Context,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds to wait after SIGTERM before SIGKILL.")
    ] = STOP_GRACE,
    json_output: JsonOpt = False,
) -> None:
    """Stop every process of the local stack (SIGTERM, then SIGKILL after --grace), leaving no orphans.

    Safe after a crash: stale PID files are cleaned up and never used to kill an unrelated process.

    Example: mlopsctl dev stop
    """
    require_local_extra("dev stop")
    from mlopsctl.console import StackProgress
    from mlopsctl.devenv.stop import stop_stack

    actx = app_context(ctx, json_output)
    with StackProgress(actx.console) as progress:
        result = stop_stack(actx.settings, grace=grace, on_progress=progress)
    if json_output:
        actx.console.json(result.as_dict())
        return
    if result.stopped:
        actx.console.success(f"Stopped {', '.join(result.stopped)} in {result.seconds:.1f} s.")
    else:
        actx.console.success("The local stack was not running.")
    if result.stale:
        actx.console.info(f"Removed stale PID files: {', '.join(result.stale)}.")


@app.command()
@with_port_options
def status(
    ctx: typer.Context,
    ports: dict[str, int | None],
    show_password: Annotated[
        bool, typer.Option("--show-password", help="Also print the local admin password.")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Show each component of the local stack: PID, port, health, memory (RSS and PSS incl. child processes).

    Exit code 0 when every component is running and healthy, 11 (STACK) otherwise.

    Example: mlopsctl dev status --json
    """
    require_local_extra("dev status")
    from mlopsctl.devenv.status import read_password, stack_status
    from mlopsctl.errors import ExitCode

    actx = app_context(ctx, json_output)
    _with_ports(actx, ports)
    st = stack_status(actx.settings)
    password = read_password(actx.settings) if show_password else None
    if json_output:
        data = st.as_dict()
        if show_password:
            data["password"] = password
        actx.console.json(data)
    else:
        from mlopsctl.render import stack_table

        actx.console.print(stack_table(st))
        if st.running:
            _print_urls(actx, st.urls, st.passwords_file, st.username)
        if show_password:
            actx.console.print(f"Password    {password or '(none yet: run `mlopsctl dev start`)'}")
        if not st.running:
            actx.console.info("Not running. Start it with `mlopsctl dev start`.")
    if not (st.all_running and st.all_healthy):
        raise typer.Exit(int(ExitCode.STACK))


@app.command()
def logs(
    ctx: typer.Context,
    component: Annotated[
        str | None,
        typer.Argument(
            help=f"One of: {', '.join(components.names())}, db-migrate, or a background helper of the start "
            f"({', '.join(HELPERS)}). Default: all components.",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C to stop).")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, help="How many last lines to print first.")
    ] = 50,
) -> None:
    """Print the last lines of a component's log (stdout+stderr), optionally following it.

    Example: mlopsctl dev logs scheduler -f -n 100
    """
    require_local_extra("dev logs")
    import sys

    from mlopsctl.devenv.logs import file_sizes, follow_lines, tail
    from mlopsctl.devenv.status import log_file

    actx = app_context(ctx)
    valid = (*components.names(), "db-migrate", *HELPERS)
    if component is not None and component not in valid:
        raise InputError(f"Unknown component {component!r}.", hint=f"Use one of: {', '.join(valid)}.")
    names = [component] if component else components.names()
    paths = {name: log_file(actx.settings, name) for name in names}
    if component and not paths[component].exists() and not follow:
        raise InputError(
            f"No log for {component} yet ({paths[component]}).",
            hint="Start the stack with `mlopsctl dev start`.",
        )
    prefix = component is None
    positions = file_sizes(paths)  # -f continues exactly where the tail below ends: no line lost or repeated
    for name, path in paths.items():
        if not path.exists() or lines == 0:
            continue
        text = tail(path, lines, end=positions[name])
        for line in text.splitlines():
            sys.stdout.write(f"{name} | {line}\n" if prefix else line + "\n")
    sys.stdout.flush()
    if follow:
        try:
            for name, line in follow_lines(paths, positions):
                sys.stdout.write(f"{name} | {line}\n" if prefix else line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
