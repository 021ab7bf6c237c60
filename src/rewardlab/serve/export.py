"""Votes → the preference parquet that ``rewardlab train rm`` reads:
``prompt, image_a, image_b`` (image bytes), ``label`` (1: a preferred, 0: b, 0.5: tie), one
row per vote, with ``annotator``, ``pair_id`` and ``voted_at`` alongside."""

from __future__ import annotations

from pathlib import Path

from .sources import open_source
from .store import LABELS, VoteStore


def export_votes(store: VoteStore, out: str | Path, source: str | Path | None = None) -> int:
    """Write every vote to ``out``; images are read from ``source`` (default: the source the
    store was filled from). Returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..utils import atomic_path

    rows = store.votes()
    if not rows:
        raise ValueError(f"{store.url} holds no votes yet")
    source = source or store.get_meta("source")
    if source is None:
        raise ValueError(f"{store.url} does not say which source its pairs came from; give --source")
    src, cache = open_source(source), {}
    expected = store.get_meta("source_fingerprint")
    if expected is not None and src.fingerprint() != expected:
        raise ValueError(f"the images in {src.root} are not those {store.url} was filled from; its votes cannot "
                         f"be exported against them")

    def image(ref: str) -> bytes:
        if ref not in cache:
            cache[ref] = src.image(ref)[0]
        return cache[ref]

    table = pa.table({"prompt": [r["prompt"] for r in rows],
                      "image_a": [image(r["image_a"]) for r in rows],
                      "image_b": [image(r["image_b"]) for r in rows],
                      "label": [LABELS[r["choice"]] for r in rows],
                      "annotator": [r["annotator"] for r in rows],
                      "pair_id": [r["pair_id"] for r in rows],
                      "voted_at": [r["created_at"] for r in rows]})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)
    return len(rows)
