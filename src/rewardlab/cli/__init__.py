"""The ``rewardlab`` command line (typer); every option shows its default in ``--help``.
Each module adds its commands to ``app`` on import."""

from . import run, search, align, rewards, world, evaluate, annotate, serve_reward  # noqa: F401  (register commands; this order is --help's)
from .common import app

__all__ = ["app", "main"]


def main() -> None:
    app()
