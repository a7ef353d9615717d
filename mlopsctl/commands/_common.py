"""Shared option types and glue for command modules: the context, the run options, and triggering, following and
printing a run."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlopsctl.appcontext import AppContext
from mlopsctl.errors import InputError

if TYPE_CHECKING:
    from mlopsctl.console import Console
    from mlopsctl.pipelines import Pipeline
    from mlopsctl.runs import RunResult

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")]

# --- the run-shaped commands: options from the pipeline registry, the shared run options declared once ---
NoRegisterOpt = Annotated[bool, typer.Option("--no-register", help="Do not register the model.")]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="Print the run id and return at once.")]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", help="Stop waiting after S seconds (exit 9; the run keeps going).", metavar="S"),
]
AutoUnpauseOpt = Annotated[
    bool,
    typer.Option("--auto-unpause/--no-auto-unpause", help="Unpause the DAG if it is paused (a paused DAG only queues)."),
]
#: the options every run-shaped command takes besides its pipeline's Params: name -> (annotation, default)
RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "no_wait": (NoWaitOpt, False),
    "timeout": (TimeoutOpt, None),
    "auto_unpause": (AutoUnpauseOpt, True),
    "json_output": (JsonOpt, False),
}
#: the Param that the registration options set, as `--register NAME` / `--no-register`
REGISTER_PARAM = "register_model"


@dataclass
class RunRequest:
    """What a run-shaped command's options asked for: Param values (list flags as typed) and the run options."""

    values: dict[str, Any]
    no_wait: bool = False
    timeout: float | None = None
    auto_unpause: bool = True
    json_output: bool = False
    register: str | None = None
    no_register: bool = False

    def launch(self, ctx: typer.Context, pipeline: str) -> None:
        """Validate the conf (before any request), then trigger `pipeline` and follow it unless --no-wait."""
        from mlopsctl.pipelines import build_conf, get_pipeline, register_value

        target = get_pipeline(pipeline)
        values = dict(self.values)
        if REGISTER_PARAM in target.schemas:
            values[REGISTER_PARAM] = register_value(self.register, self.no_register)
        conf = build_conf(target, **values)
        check_timeout(self.timeout)
        actx = app_context(ctx, self.json_output)
        launch(actx, target, conf, wait=not self.no_wait, timeout=self.timeout, auto_unpause=self.auto_unpause)


def _range(schema: dict[str, Any]) -> str:
    """The bounds --help advertises: "(1..1000)", "(each 1..1000)", "(strictly between 0 and 1)" or ""."""
    each = "each " if "items" in schema else ""
    bounds = schema.get("items", schema)
    if "minimum" in bounds and "maximum" in bounds:
        return f"({each}{bounds['minimum']}..{bounds['maximum']})"
    if "exclusiveMinimum" in bounds and "exclusiveMaximum" in bounds:
        return f"({each}strictly between {bounds['exclusiveMinimum']} and {bounds['exclusiveMaximum']})"
    return ""


_PY_TYPES = {"integer": int, "number": float, "string": str, "array": str}  # a list flag is typed as its text


def param_option(name: str, schema: dict[str, Any]) -> tuple[Any, Any]:
    """(annotation, default) of the option that sets a Param: its flag, type, default and help (the schema's
    description and bounds) all from the schema."""
    from mlopsctl.pipelines import flag_for, schema_types

    types = schema_types(schema)
    main = next(t for t in types if t != "null")
    py: Any = _PY_TYPES[main]
    default = schema["default"]
    help_text = " ".join(part for part in (schema.get("description", ""), _range(schema)) if part)
    extra: dict[str, Any] = {}
    if main == "array":
        help_text = f"Comma-separated list. {help_text}"
        extra["metavar"] = "LIST"
        default = ",".join(map(str, default)) if default is not None else None
    if "null" in types or default is None:
        py = py | None
    return Annotated[py, typer.Option(flag_for(name), help=help_text, **extra)], default


def pipeline_command(pipeline: str, *, own: tuple[str, ...] = ()) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a run-shaped command the options of `pipeline`'s Params (flag, type, default and --help bounds from
    the registry's schemas) followed by the shared run options; the command declares its own options and a
    `request: RunRequest` parameter, which receives the rest. The Params named in `own` get no option: the
    command sets them itself (in `request.values`)."""
    from mlopsctl.pipelines import flag_for, get_pipeline

    generated: dict[str, tuple[Any, Any]] = {}
    for name, schema in get_pipeline(pipeline).schemas.items():
        if name in own:
            continue
        if name == REGISTER_PARAM:  # None: the schema's default, which the help names
            help_text = f"{schema['description']} [default: {schema['default']}]"
            generated["register"] = (
                Annotated[str | None, typer.Option(flag_for(name), help=help_text, show_default=False)], None
            )
            generated["no_register"] = (NoRegisterOpt, False)
        else:
            generated[name] = param_option(name, schema)
    generated.update(RUN_OPTIONS)

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "request"]
        params = [*own, *(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
            for name, (annotation, default) in generated.items()
        )]

        @functools.wraps(func)
        def command(**kwargs: Any) -> None:
            own_values = {p.name: kwargs.pop(p.name) for p in own}
            run = {k: kwargs.pop(k) for k in (*RUN_OPTIONS, "register", "no_register") if k in kwargs}
            func(**own_values, request=RunRequest(values=kwargs, **run))

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def escape(text: str) -> str:
    """rich's markup escape, imported on use (rich is not loaded at CLI start)."""
    from rich.markup import escape as _escape

    return _escape(text)


def app_context(ctx: typer.Context, json_output: bool = False) -> AppContext:
    """The AppContext built by the root callback (switching it to --json mode if asked)."""
    obj = ctx.find_root().obj
    if not isinstance(obj, AppContext):  # invoked outside the root app (tests of a sub-app)
        obj = AppContext()
        ctx.find_root().obj = obj
    obj.set_json(json_output)
    return obj


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and not timeout > 0:
        raise InputError(f"--timeout must be a positive number of seconds, got {timeout:g}.")
    return timeout


def launch(
    actx: AppContext,
    pipeline: Pipeline,
    conf: dict[str, Any],
    *,
    wait: bool = True,
    timeout: float | None = None,
    auto_unpause: bool = True,
) -> None:
    """Trigger (after the service's preflight), then follow and print the result, or print the run id at once."""
    if wait:
        print_result(actx.console, trigger_and_follow(actx, pipeline, conf, timeout=timeout, auto_unpause=auto_unpause))
        return
    from mlopsctl.console import RunProgress

    console = actx.console
    triggered = actx.runs(RunProgress(console, pipeline.dag_id)).trigger(pipeline, conf, auto_unpause=auto_unpause)
    if console.json_mode:
        console.json(triggered.model_dump())
    else:
        console.print(triggered.dag_run_id)
        if not console.quiet:
            console.err.print(
                f"Triggered {pipeline.dag_id} ({triggered.state}). Follow it with: "
                f"mlopsctl status {escape(triggered.dag_run_id)} --wait",
                soft_wrap=True,
            )


def trigger_and_follow(
    actx: AppContext,
    pipeline: Pipeline,
    conf: dict[str, Any],
    *,
    timeout: float | None = None,
    auto_unpause: bool = True,
    announce: str = "Triggered",
) -> RunResult:
    """Trigger (after the service's preflight), say so on stderr ("<announce> <dag id> run <id>" and its link),
    then `follow` the run: its result once it succeeded."""
    from mlopsctl.console import RunProgress

    console = actx.console
    progress = RunProgress(console, pipeline.dag_id)
    started = time.monotonic()
    triggered = actx.runs(progress).trigger(pipeline, conf, auto_unpause=auto_unpause)
    if not console.quiet:  # stderr, also in --json mode; soft_wrap keeps the URL on one line
        console.err.print(f"{announce} {pipeline.dag_id} run [bold]{escape(triggered.dag_run_id)}[/bold]\n"
                          f"  {escape(triggered.links['airflow'])}", soft_wrap=True)
    return follow(actx, pipeline, triggered.dag_run_id, timeout=timeout, started=started, progress=progress)


def follow(
    actx: AppContext,
    pipeline: Pipeline,
    dag_run_id: str,
    *,
    timeout: float | None = None,
    started: float | None = None,
    progress: Any = None,
) -> RunResult:
    """Follow a run to its end with live progress and return its result. A run that did not succeed is printed
    (`print_result`) and its failure raised (RUN_FAILED); a timeout or Ctrl-C raises with the reattach hint."""
    from mlopsctl.console import RunProgress

    progress = progress or RunProgress(actx.console)
    progress.dag_id, progress.dag_run_id = pipeline.dag_id, dag_run_id
    service = actx.runs(progress)
    with progress:
        result = service.follow(pipeline, dag_run_id, timeout=timeout, on_update=progress,
                                tasks_each_poll=progress.tasks_each_poll, started=started)
    failure = result.failure()
    if failure is not None:
        print_result(actx.console, result)
        raise failure
    return result


def print_result(console: Console, result: RunResult) -> None:
    """One JSON document, or the summary, links, tasks (unless it succeeded), grid and failure tail."""
    for w in result.warnings:
        console.warn(w)
    doc = result.to_json()
    if console.json_mode:
        console.json(doc)
        return
    from mlopsctl.render import heatmap, leaderboard, link_lines, run_summary, tasks_table

    console.print(run_summary(doc))
    for line in link_lines(doc):
        console.print(line, soft_wrap=True, markup=False)
    if result.state != "success":
        console.print(tasks_table(doc["tasks"]))
    points = (result.mlflow or {}).get("points")
    if points:
        console.print(leaderboard(points))
        console.print(heatmap(points))
    if result.failed_task:
        tail = result.log_tail or []
        console.print(f"[bold red]Task {escape(result.failed_task)} failed[/bold red]; last {len(tail)} log lines:")
        for line in tail:
            console.print(escape(line), soft_wrap=True)
