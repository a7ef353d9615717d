"""(placeholder until implemented)."""
import typer


def grid_search(ctx: typer.Context) -> None:
    """(not yet implemented)"""
    raise typer.Exit(1)
