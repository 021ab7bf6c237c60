"""The top-level typer app and what every command shares: console, progress bars, errors."""

from __future__ import annotations

import contextlib

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(help="rewardlab: reward-driven image generation.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console()

DEFAULT_STEPS, DEFAULT_GUIDANCE = 20, 3.0


@contextlib.contextmanager
def progress_bar(description: str, total: int):
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console,
                  transient=False) as prog:
        task = prog.add_task(description, total=total, info="")
        yield lambda n=1, info="": prog.update(task, advance=n, info=info)


def run_training(description: str, steps: int, train, ship_as: str) -> None:
    """Run ``train(progress)`` — a trainer that reports ``(step, loss)`` and returns its weights
    path — under a bar that follows the step (a resumed run starts where its checkpoint left
    off), then say where the weights are and where to copy them to ship."""
    done = [0]
    with progress_bar(description, steps) as advance:
        def on_step(step: int, loss: float) -> None:
            advance(step - done[0], info=f"loss {loss:.4f}")
            done[0] = step

        path = train(on_step)
    console.print(f"weights: {path}  (copy to src/rewardlab/world/data/{ship_as} to ship)")


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)
