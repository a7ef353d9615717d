"""(placeholder until implemented)."""
import typer


def dags(ctx: typer.Context) -> None:
    """(not yet implemented)"""
    raise typer.Exit(1)
