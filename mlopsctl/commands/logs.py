"""(placeholder until implemented)."""
import typer


def logs(ctx: typer.Context) -> None:
    """(not yet implemented)"""
    raise typer.Exit(1)
