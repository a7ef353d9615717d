"""(placeholder until implemented)."""
import typer


def check(ctx: typer.Context) -> None:
    """(not yet implemented)"""
    raise typer.Exit(1)
