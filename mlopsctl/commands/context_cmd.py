"""`mlopsctl context ...`: named Airflow/MLflow targets (hosted Airflow, Astronomer, the local stack)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlopsctl.commands._common import JsonOpt, app_context, escape
from mlopsctl.errors import ConfigError, InputError


class _LazyModule:
    """`mlopsctl.contexts` pulls in pydantic-settings: import it on first use, not at CLI start."""

    def __getattr__(self, name: str) -> Any:
        import importlib

        return getattr(importlib.import_module("mlopsctl.contexts"), name)


contexts = _LazyModule()

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help=(
        "Named targets: Airflow URL + auth kind + MLflow URI, kept in contexts.toml in the user config dir "
        "([env: MLOPSCTL_CONFIG_DIR]). Select one with `--context NAME`, MLOPSCTL_CONTEXT or `context use`. "
        "Secrets never go in the file.\n\n"
        "Example: mlopsctl context add astro --airflow-url https://ORG.astronomer.run/DEPLOYMENT "
        "--auth token --token-env ASTRO_API_TOKEN"
    ),
)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Context name, e.g. prod or astro.")],
    airflow_url: Annotated[
        str,
        typer.Option(
            "--airflow-url", help="Airflow base URL (api-server), e.g. https://airflow.example.com."
        ),
    ],
    auth: Annotated[
        str, typer.Option("--auth", help="password (user/password -> JWT), token (static bearer), or none.")
    ] = "password",
    username: Annotated[
        str | None, typer.Option("--username", help="Airflow user for password auth.")
    ] = None,
    token_env: Annotated[
        str | None,
        typer.Option(
            "--token-env", help="Name of the env var holding the bearer token, e.g. ASTRO_API_TOKEN."
        ),
    ] = None,
    mlflow_uri: Annotated[
        str | None, typer.Option("--mlflow-uri", help="MLflow tracking URI (http(s)://... or databricks).")
    ] = None,
    ca_bundle: Annotated[
        Path | None, typer.Option("--ca-bundle", help="CA bundle (PEM) for HTTPS verification.")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Do not verify HTTPS certificates (not recommended).")
    ] = False,
    description: Annotated[
        str | None, typer.Option("--description", help="Free text shown by `list`.")
    ] = None,
    use: Annotated[bool, typer.Option("--use", help="Also make it the current context.")] = False,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace an existing context of that name.")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Add (or with --force replace) a context.

    Example: mlopsctl context add prod --airflow-url https://airflow.example.com --auth password --username ops --use
    """
    app_ctx = app_context(ctx, json_output)
    ca_bundle = contexts.check_new(
        name, auth=auth, token_env=token_env, ca_bundle=ca_bundle, mlflow_uri=mlflow_uri
    )
    new = contexts.parse_context(
        airflow_url=airflow_url,
        auth=auth,
        username=username,
        token_env=token_env,
        mlflow_tracking_uri=mlflow_uri,
        verify_tls=not insecure,
        ca_bundle=str(ca_bundle) if ca_bundle else None,
        description=description,
    )
    cfg, path = contexts.add(name, new, use=use, force=force)
    if new.insecure_transport:
        app_ctx.console.warn(
            f"{new.airflow_url} is plain HTTP: credentials would cross the network unencrypted."
        )
    if insecure:
        app_ctx.console.warn("TLS certificate verification is off for this context.")
    if json_output:
        app_ctx.console.json(contexts.describe(name, new, cfg.current) | {"path": str(path)})
    else:
        app_ctx.console.success(
            f"Context {escape(name)} saved to {escape(str(path))}" + (" (current)" if use else "")
        )


@app.command("list")
def list_(ctx: typer.Context, json_output: JsonOpt = False) -> None:
    """List contexts; * marks the current one.

    Example: mlopsctl context list --json
    """
    app_ctx = app_context(ctx, json_output)
    cfg = contexts.load()
    rows = contexts.summaries(cfg)
    if json_output:
        app_ctx.console.json({"current": cfg.current, "contexts": rows})
        return
    if not rows:
        app_ctx.console.info("No contexts yet. Add one: mlopsctl context add NAME --airflow-url URL")
        return
    from rich.table import Table

    table = Table("", "NAME", "AIRFLOW URL", "AUTH", "MLFLOW", "DESCRIPTION", box=None)
    for r in rows:
        table.add_row(
            "*" if r["current"] else "",
            escape(r["name"]),
            escape(r["airflow_url"]),
            r["auth"],
            escape(r["mlflow_tracking_uri"] or "-"),
            escape(r["description"] or ""),
        )
    app_ctx.console.print(table)


@app.command("use")
def use(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Context to make current.")] = None,
    unset: Annotated[
        bool, typer.Option("--unset", help="Clear the current context (back to env/defaults).")
    ] = False,
) -> None:
    """Make NAME the current context (used when neither --context nor MLOPSCTL_CONTEXT is given).

    Example: mlopsctl context use prod
    """
    app_ctx = app_context(ctx)
    if (name is None) == (not unset):
        raise InputError("Give a context NAME or --unset (not both).")
    contexts.set_current(name)
    if name is None:
        app_ctx.console.success("No current context (env, .env and defaults apply).")
    else:
        app_ctx.console.success(f"Current context: {escape(name)}")


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Context to show (default: the active one).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Show a context with its secrets masked (only where each secret comes from, and whether it is set).

    Example: mlopsctl context show prod
    """
    app_ctx = app_context(ctx, json_output)
    cfg = contexts.load()
    if name is None:
        name = contexts.active_name(app_ctx.settings.context)
        if not name:
            raise ConfigError("No context selected.", hint="Give a NAME, or run `mlopsctl context use NAME`.")
    data = contexts.describe(name, contexts.get(name, cfg), cfg.current)
    if json_output:
        app_ctx.console.json(data)
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key in contexts.SHOWN_FIELDS:
        if key not in data:
            continue
        value = data[key]
        if key in ("token", "password") and value is None:
            value = "(not set)"
        table.add_row(key, escape("-" if value is None else str(value)))
    app_ctx.console.print(table)
    if data.get("auth") == "token" and not data.get("token_source"):
        var = data.get("token_env") or "the token env var"
        app_ctx.console.warn(f"No token available: export {var}=... before using this context.")


@app.command("remove")
def remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Context to delete.")]) -> None:
    """Delete a context (and any secret mlopsctl stored for it in the OS keyring).

    Example: mlopsctl context remove staging
    """
    app_ctx = app_context(ctx)
    contexts.remove(name)
    app_ctx.console.success(f"Removed context {escape(name)}")


@app.command("set-secret")
def set_secret(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Context whose token/password to store.")],
) -> None:
    """Store the context's token (auth=token) or password (auth=password) in the OS keyring (needs the
    optional `keyring` package). The secret is read from a hidden prompt, never from an argument.

    Example: mlopsctl context set-secret astro
    """
    app_ctx = app_context(ctx)
    kind, target = contexts.secret_kind(name)
    secret = typer.prompt(f"{kind.capitalize()} for {name}", hide_input=True)
    if not secret:
        raise InputError(f"Empty {kind}.")
    contexts.keyring_set(name, kind, secret, target.username)
    app_ctx.console.success(f"Stored the {kind} for {escape(name)} in the OS keyring.")
