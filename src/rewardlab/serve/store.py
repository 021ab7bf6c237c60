"""The vote store: pairs to judge and the votes cast on them, in any SQLAlchemy database.

SQLite (WAL mode, a busy timeout so concurrent writers wait instead of failing) is the
default; a team points ``--db`` at PostgreSQL (``postgresql+psycopg://user@host/db``).
Every vote is its own transaction, and a unique (pair, annotator) constraint lets the
database, not the app, refuse a second vote on a pair — so concurrent annotators can
neither lose nor duplicate a vote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import (Column, Float, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint,
                        create_engine, event, func, insert, select)
from sqlalchemy.exc import IntegrityError

CHOICES = ("a", "b", "tie")
LABELS = {"a": 1.0, "b": 0.0, "tie": 0.5}  # the preference format's label: 1 = image_a preferred

metadata = MetaData()
meta = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))
pairs = Table("pairs", metadata,
              Column("id", Integer, primary_key=True, autoincrement=True),
              Column("key", String(1024), nullable=False, unique=True),
              Column("prompt", Text, nullable=False),
              Column("image_a", String(1024), nullable=False),
              Column("image_b", String(1024), nullable=False))
votes = Table("votes", metadata,
              Column("id", Integer, primary_key=True, autoincrement=True),
              Column("pair_id", Integer, ForeignKey("pairs.id"), nullable=False, index=True),
              Column("annotator", String(64), nullable=False),
              Column("choice", String(3), nullable=False),
              Column("created_at", Float, nullable=False),
              UniqueConstraint("pair_id", "annotator", name="one_vote_per_annotator"))


class VoteError(ValueError):
    """A vote the store refuses; ``status`` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PairRow:
    id: int
    prompt: str
    image_a: str
    image_b: str


class VoteStore:
    def __init__(self, url: str):
        self.url = url
        sqlite = url.startswith("sqlite")
        self.engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {},
                                    pool_pre_ping=not sqlite)
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    def set_meta(self, key: str, value: str) -> None:
        with self.engine.begin() as c:
            if c.execute(select(meta.c.value).where(meta.c.key == key)).first() is None:
                c.execute(insert(meta).values(key=key, value=value))
            else:
                c.execute(meta.update().where(meta.c.key == key).values(value=value))

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as c:
            return c.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def bind_source(self, root: str, fingerprint: str) -> None:
        """A database holds the votes on one source: record it on first use, and refuse
        another one — or the same folder with other images in it — whose images the old
        votes would be shown and exported against."""
        known = self.get_meta("source"), self.get_meta("source_fingerprint")
        if known == (None, None):
            self.set_meta("source", root)
            self.set_meta("source_fingerprint", fingerprint)
        elif known[0] != root:
            raise ValueError(f"{self.url} holds the votes on {known[0]}, not {root}: use another database")
        elif known[1] != fingerprint:
            raise ValueError(f"the images in {root} changed since {self.url} was filled (a regenerated run?): its "
                             f"votes would go with other images; use another database")

    def add_pairs(self, items) -> int:
        """Insert the ``(key, prompt, image_a, image_b)`` items not stored yet; returns how many were new."""
        with self.engine.begin() as c:
            known = set(c.execute(select(pairs.c.key)).scalars())
            new = [dict(key=k, prompt=p, image_a=a, image_b=b) for k, p, a, b in items if k not in known]
            if new:
                c.execute(insert(pairs), new)
        return len(new)

    def pair(self, pair_id: int) -> PairRow | None:
        with self.engine.connect() as c:
            row = c.execute(select(pairs.c.id, pairs.c.prompt, pairs.c.image_a, pairs.c.image_b)
                            .where(pairs.c.id == pair_id)).first()
        return PairRow(*row) if row else None

    def next_pair(self, annotator: str, votes_per_pair: int, skip: tuple[int, ...] = ()) -> PairRow | None:
        """A pair ``annotator`` has not judged (nor ``skip``ped) among those with the fewest votes
        below the target; annotators walk the pairs in different orders so that concurrent ones
        rarely meet."""
        counts = (select(votes.c.pair_id, func.count().label("n")).group_by(votes.c.pair_id).subquery())
        mine = select(votes.c.pair_id).where(votes.c.annotator == annotator)
        n = func.coalesce(counts.c.n, 0)
        salt = sum(annotator.encode()) * 7919 % 10007
        query = (select(pairs.c.id, pairs.c.prompt, pairs.c.image_a, pairs.c.image_b)
                 .outerjoin(counts, counts.c.pair_id == pairs.c.id)
                 .where(n < votes_per_pair, pairs.c.id.not_in(mine), pairs.c.id.not_in(list(skip)))
                 .order_by(n, (pairs.c.id * 7919 + salt) % 10007, pairs.c.id).limit(1))
        with self.engine.connect() as c:
            row = c.execute(query).first()
        return PairRow(*row) if row else None

    def vote(self, pair_id: int, annotator: str, choice: str) -> None:
        """Store one vote in its own transaction; refuses unknown pairs, choices and repeat votes."""
        if choice not in CHOICES:
            raise VoteError(f"choice must be one of {', '.join(CHOICES)}, got {choice!r}", 422)
        if self.pair(pair_id) is None:
            raise VoteError(f"no pair {pair_id}", 404)
        try:
            with self.engine.begin() as c:
                c.execute(insert(votes).values(pair_id=pair_id, annotator=annotator, choice=choice,
                                               created_at=time.time()))
        except IntegrityError:
            raise VoteError(f"{annotator} has already voted on pair {pair_id}", 409) from None

    def progress(self, annotator: str | None, votes_per_pair: int) -> dict:
        """Votes counted towards the target (at most ``votes_per_pair`` a pair), the target, and
        ``annotator``'s own votes."""
        counts = select(func.count()).select_from(votes).group_by(votes.c.pair_id)
        with self.engine.connect() as c:
            total = c.execute(select(func.count()).select_from(pairs)).scalar()
            per_pair = list(c.execute(counts).scalars())
            mine = c.execute(select(func.count()).select_from(votes).where(votes.c.annotator == annotator)).scalar() if annotator else 0
        return {"pairs": total, "target": total * votes_per_pair, "votes": sum(per_pair),
                "done": sum(min(n, votes_per_pair) for n in per_pair), "mine": mine}

    def votes(self) -> list[dict]:
        """Every vote joined with its pair, oldest first."""
        query = (select(votes.c.id, votes.c.pair_id, votes.c.annotator, votes.c.choice, votes.c.created_at,
                        pairs.c.prompt, pairs.c.image_a, pairs.c.image_b)
                 .join(pairs, pairs.c.id == votes.c.pair_id).order_by(votes.c.id))
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(query)]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
