"""``rewardlab annotate``: collect human preference votes in the browser; ``annotate export``
turns them into the preference parquet that ``rewardlab train rm`` reads (``data.train``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Optional

import typer

from .common import app, check_output_file, console, err_console, fail

annotate_app = typer.Typer(help="Collect pairwise human preferences in the browser, and export them.")
app.add_typer(annotate_app, name="annotate")

DB_HELP = "Vote database: an SQLAlchemy URL (sqlite:///votes.db, postgresql+psycopg://user@host/db) or a file path."


@annotate_app.callback(invoke_without_command=True)
def annotate(
    ctx: typer.Context,
    source: Optional[Path] = typer.Option(None, help="Pairs to judge: a geneval or search run folder, a folder "
                                          "with groups.jsonl, or a preference parquet."),
    db: str = typer.Option("sqlite:///votes.db", help=DB_HELP),
    token: Optional[str] = typer.Option(None, envvar="REWARDLAB_TOKEN",
                                        help="Token every API call must carry (default: a random one, printed)."),
    votes_per_pair: int = typer.Option(1, min=1, help="Votes wanted on each pair (from different annotators)."),
    max_pairs_per_prompt: int = typer.Option(10, min=1, help="Pairs drawn from each prompt's images."),
    seed: int = typer.Option(0, help="Seed of the pair draw."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on; 0.0.0.0 opens the app to the network."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port."),
):
    """Serve the annotation page: a prompt and two images; vote left, right or tie by click or
    with the keys ← → =. Every vote is stored at once; restarting with the same --db resumes."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from ..serve.annotate import create_app

    if source is None:
        fail("give --source (a geneval or search run folder, a folder with groups.jsonl, or a preference parquet)")
    store, src = _open_store(db), _open_source(source)
    try:
        store.bind_source(str(src.root), src.fingerprint())
    except ValueError as e:
        fail(str(e))
    added = store.add_pairs(src.pairs(max_pairs_per_prompt, seed))
    token = token or secrets.token_urlsafe(16)
    progress = store.progress(None, votes_per_pair)
    console.print(f"{progress['pairs']} pairs ({added} new), {progress['done']} of {progress['target']} votes in {db}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"warning: listening on {host}: the app is reachable from the network (token-guarded)")
    console.print(f"open http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}/#token={token}")
    uvicorn.run(create_app(store, src, token, votes_per_pair), host=host, port=port, log_level="warning")


@annotate_app.command("export")
def export(
    db: str = typer.Option("sqlite:///votes.db", help=DB_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Preference parquet to write."),
    source: Optional[Path] = typer.Option(None, help="Where the images are (default: the source the app served)."),
):
    """Write every vote as a row of a preference parquet (prompt, image_a, image_b, label,
    annotator, pair_id, voted_at): the input of `rewardlab train rm` (data.train=FILE)."""
    from ..serve.export import export_votes
    from ..serve.sources import SourceError

    check_output_file(out, (".parquet",))
    try:
        n = export_votes(_open_store(db), out, source)
    except (ValueError, SourceError, OSError) as e:
        fail(str(e))
    console.print(f"wrote {n} votes to {out}")


def _open_store(db: str):
    from sqlalchemy.exc import SQLAlchemyError

    from ..serve.store import VoteStore

    url = db if "://" in db else f"sqlite:///{db}"
    try:
        return VoteStore(url)
    except (SQLAlchemyError, ImportError, ValueError) as e:
        fail(f"cannot open the vote database {db}: {str(e).splitlines()[0]}")


def _open_source(path: Path):
    from ..serve.sources import SourceError, open_source

    try:
        return open_source(path)
    except SourceError as e:
        fail(str(e))
