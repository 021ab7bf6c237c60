"""The annotation app: a page that shows a prompt and two images, and the token-guarded API
behind it. Votes go straight into a ``VoteStore``; images only ever come through the
source (``sources.py``), by pair id, never by a path the client names."""

from __future__ import annotations

import hashlib
import hmac
import re
from importlib.resources import files

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from .sources import SourceError
from .store import VoteError, VoteStore

ANNOTATOR = re.compile(r"[\w.@+-]{1,64}")


class Vote(BaseModel):
    pair_id: int
    annotator: str
    choice: str  # "a", "b" or "tie"


def create_app(store: VoteStore, source, token: str, votes_per_pair: int = 1) -> FastAPI:
    if not token:
        raise ValueError("the annotation app needs a token")
    app = FastAPI(title="rewardlab annotate", docs_url=None, redoc_url=None, openapi_url=None)
    page = files("rewardlab.serve").joinpath("static/annotate.html").read_text(encoding="utf-8")

    def authorised(authorization: str | None = Header(None)) -> None:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    api = dict(dependencies=[Depends(authorised)])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/next", **api)
    def next_pair(annotator: str = Query(...), skip: str = Query("", max_length=2000)) -> dict:
        """``skip``: comma-separated ids of pairs this page could not show."""
        _check_annotator(annotator)
        try:
            skipped = tuple(int(x) for x in skip.split(",") if x)
        except ValueError:
            raise HTTPException(422, "skip: comma-separated pair ids") from None
        pair = store.next_pair(annotator, votes_per_pair, skipped)
        progress = store.progress(annotator, votes_per_pair)
        if pair is None:
            return {"pair": None, "progress": progress}
        left, right = ("a", "b") if _shown_in_order(pair.id, annotator) else ("b", "a")
        return {"pair": {"id": pair.id, "prompt": pair.prompt, "left": left, "right": right}, "progress": progress}

    @app.get("/api/pairs/{pair_id}/{side}", **api)
    def image(pair_id: int, side: str) -> Response:
        pair = store.pair(pair_id)
        if pair is None or side not in ("a", "b"):
            raise HTTPException(404, f"no image {side!r} of pair {pair_id}")
        try:
            data, media_type = source.image(pair.image_a if side == "a" else pair.image_b)
        except (SourceError, OSError) as e:
            raise HTTPException(404, str(e)) from None
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/votes", status_code=201, **api)
    def vote(v: Vote) -> dict:
        _check_annotator(v.annotator)
        try:
            store.vote(v.pair_id, v.annotator, v.choice)
        except VoteError as e:
            raise HTTPException(e.status, str(e)) from None
        return {"stored": True, "progress": store.progress(v.annotator, votes_per_pair)}

    @app.get("/api/progress", **api)
    def progress(annotator: str | None = None) -> dict:
        return store.progress(annotator, votes_per_pair)

    return app


def _check_annotator(name: str) -> None:
    if not ANNOTATOR.fullmatch(name):
        raise HTTPException(422, "annotator: 1 to 64 letters, digits or . _ @ + -")


def _shown_in_order(pair_id: int, annotator: str) -> bool:
    """Which side image a goes on, fixed per (pair, annotator) and balanced over pairs, so that
    a habit of picking one side does not become a preference."""
    return hashlib.sha256(f"{pair_id}:{annotator}".encode()).digest()[0] % 2 == 0
