"""`mlopsctl connect`: hand Databricks credentials to Airflow as a connection, and check connections."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlparse

import typer

from mlopsctl.commands._common import JsonOpt, app_context, escape

app = typer.Typer(
    no_args_is_help=True,
    help="Create/update the Airflow connections the pipelines use (Databricks).",
    rich_markup_mode=None,
)


@app.command("databricks")
def connect_databricks(
    ctx: typer.Context,
    conn_id: Annotated[
        str, typer.Option("--conn-id", help="Airflow connection id the DAGs use. [env: MLOPSCTL_DATABRICKS_CONN_ID]",
                          envvar="MLOPSCTL_DATABRICKS_CONN_ID", show_envvar=False)
    ] = "databricks_default",
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="~/.databrickscfg profile. [env: DATABRICKS_CONFIG_PROFILE]",
                     show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Verify the credentials and show the connection (secret masked); "
                                             "write nothing.")
    ] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a plain-http:// Databricks host (local test servers only).")
    ] = False,
    managed_identity: Annotated[
        bool, typer.Option("--azure-managed-identity",
                           help="Let the Airflow workers sign in with their Azure VM's managed identity (ARM_CLIENT_ID "
                                "picks a user-assigned one); not verified from here. [env: ARM_USE_MSI]",
                           envvar="ARM_USE_MSI", show_envvar=False)
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Verify Databricks credentials and create or update the Airflow connection for them.

    Credentials come from databricks-sdk's unified auth, in its order: DATABRICKS_HOST + DATABRICKS_TOKEN,
    OAuth M2M (DATABRICKS_CLIENT_ID / DATABRICKS_CLIENT_SECRET), an Azure service principal (ARM_CLIENT_ID /
    ARM_CLIENT_SECRET / ARM_TENANT_ID), or a ~/.databrickscfg profile. With --azure-managed-identity the
    connection carries no secret: the workers' managed identity signs in. Secrets are sent to Airflow only;
    they are never printed or stored by mlopsctl.

    Example: DATABRICKS_HOST=https://adb-123.azuredatabricks.net DATABRICKS_TOKEN=... mlopsctl connect databricks
    """
    from mlopsctl import databricks as dbx

    app_ctx = app_context(ctx, json_output)
    console = app_ctx.console
    identity_doc: dict[str, Any]
    if managed_identity:
        config = dbx.managed_identity_config(profile)
        console.info(f"Databricks: {escape(config.host)} with the Airflow workers' Azure managed identity "
                     "(not verified here: only the workers' VMs hold it; their first Databricks task signs in with it)")
        identity_doc = {"host": config.host, "auth_type": dbx.AZURE_MSI, "verified": False}
    else:
        client = dbx.workspace_client(profile)
        identity = dbx.whoami(client)
        console.info(f"Databricks: signed in to {identity.host} as {identity.user_name} ({identity.auth_type})")
        config, identity_doc = client.config, identity.as_dict()
    payload = dbx.connection_payload(config, conn_id, insecure=insecure)
    shown = dbx.masked(payload)
    result: dict[str, Any] = {"identity": identity_doc, "connection": shown, "dry_run": dry_run}
    if dbx.needs_azure_identity(payload):
        result["airflow_requires"] = dbx.AZURE_PROVIDER_EXTRA
        console.info(f"The Airflow workers need {escape(dbx.AZURE_PROVIDER_EXTRA)} installed to sign in with this "
                     "connection.")
    if dry_run:
        result["action"] = "none"
        if app_ctx.json_mode:
            console.json(result)
            return
        console.print(f"Would write Airflow connection {conn_id} (dry run, nothing written):")
        console.print(json.dumps(shown, indent=2), markup=False, soft_wrap=True)
        return
    airflow_url = app_ctx.settings.airflow_url
    conn, created = app_ctx.airflow.upsert_connection(payload)
    result["action"] = "created" if created else "updated"
    result["airflow_url"] = airflow_url
    if app_ctx.json_mode:
        console.json(result)
        return
    verb = "Created" if created else "Updated"
    console.success(f"{verb} Airflow connection {conn.connection_id} ({conn.conn_type}) on {airflow_url}")
    user = identity_doc.get("user_name") or "(the workers' managed identity)"
    console.print(f"connection  {conn.connection_id}\nworkspace   {identity_doc['host']}\nuser        "
                  f"{user}\nauth        {identity_doc['auth_type']}", markup=False)


def _conn_host(conn: Any) -> str:
    host = conn.host or ""
    scheme = conn.schema_ or "https"
    if "://" in host:
        parsed = urlparse(host)
        host, scheme = parsed.hostname or host, parsed.scheme
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}" if host else ""


def _auth_kind(conn: Any) -> str:
    try:
        extra = json.loads(conn.extra) if conn.extra else {}
    except ValueError:
        extra = {}
    if not isinstance(extra, dict):
        extra = {}
    if extra.get("service_principal_oauth"):
        return "oauth-m2m"
    if extra.get("use_azure_managed_identity"):
        return "azure-msi"
    if extra.get("azure_tenant_id"):
        return "azure-sp"
    if conn.login:
        return "basic"
    if conn.password:
        return "token"
    return "none"


@app.command("status")
def connect_status(
    ctx: typer.Context,
    profile: Annotated[
        str | None, typer.Option("--profile", help="~/.databrickscfg profile to check with.", show_default=False)
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Show the Databricks connections in Airflow and whether your local credentials work against them.

    Airflow does not give secrets back (and disables its connection test by default), so each
    connection's workspace is checked with your local Databricks credentials when they point at the
    same host.

    Example: mlopsctl connect status --json
    """
    from mlopsctl import databricks as dbx
    from mlopsctl.errors import MlopsctlError

    app_ctx = app_context(ctx, json_output)
    console = app_ctx.console
    conns = [c for c in app_ctx.airflow.list_connections() if c.conn_type == "databricks"]
    local: dict[str, Any] = {"configured": False}
    identity = None
    try:
        client = dbx.workspace_client(profile)
        local = {"configured": True, "host": client.config.host}
        identity = dbx.whoami(client)
        local.update(ok=True, user_name=identity.user_name)
    except MlopsctlError as exc:
        if local.get("configured"):
            local.update(ok=False, error=exc.message)
    rows = []
    for conn in conns:
        host = _conn_host(conn)
        if not local.get("configured"):
            check = "not checked (no local Databricks credentials)"
        elif urlparse(host).hostname != urlparse(local["host"]).hostname:
            check = f"not checked (local credentials are for {local['host']})"
        elif local.get("ok"):
            check = f"ok: workspace answers as {local['user_name']}"
        else:
            check = f"failed: {local.get('error')}"
        rows.append({"connection_id": conn.connection_id, "host": host, "auth": _auth_kind(conn), "check": check})
    if app_ctx.json_mode:
        console.json({"connections": rows, "local_credentials": local})
        return
    if not rows:
        console.print("No Databricks connections in Airflow. Create one with: mlopsctl connect databricks",
                      markup=False)
        return
    from rich.table import Table

    table = Table("connection", "host", "auth", "check")
    for row in rows:
        table.add_row(row["connection_id"], row["host"], row["auth"], row["check"])
    console.print(table)
