"""`mlopsctl init` (placeholder until implemented)."""
import typer


def init(ctx: typer.Context) -> None:
    """Scaffold a project."""
    raise typer.Exit(1)
