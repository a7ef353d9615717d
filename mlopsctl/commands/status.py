"""(placeholder until implemented)."""
import typer


def status(ctx: typer.Context) -> None:
    """(not yet implemented)"""
    raise typer.Exit(1)
