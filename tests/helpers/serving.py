"""Helpers for the serving tests: a ShapeWorld source folder, a live uvicorn server on a free
loopback port, and a throwaway PostgreSQL server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_source(root: Path, prompts: int = 4, images: int = 3, seed: int = 0) -> Path:
    """``root/groups.jsonl`` with ``prompts`` ShapeWorld prompts, each with a correct render
    and ``images - 1`` renders of near misses."""
    from rewardlab.images import save_png
    from rewardlab.world.prompts import PromptSampler, near_miss
    from rewardlab.world.render import render_record

    rng = np.random.default_rng(seed)
    lines = []
    for i, rec in enumerate(PromptSampler("train", seed=seed)(prompts, rng)):
        files = []
        for k in range(images):
            shown = rec if k == 0 else near_miss(rec, rng)
            files.append(f"p{i}/img{k}.png")
            save_png(render_record(shown, int(rng.integers(2**31))), root / files[-1])
        lines.append(json.dumps({"prompt": rec["prompt"], "images": files}))
    (root / "groups.jsonl").write_text("\n".join(lines) + "\n")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app):
    """Serve ``app`` with uvicorn in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def postgres_server():
    """A PostgreSQL server (Debian's ``postgresql``) in a temporary data directory on a free
    port; yields its SQLAlchemy URL. As root it runs as the ``postgres`` user, which
    PostgreSQL requires."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (scripts/system-deps.sh does)")
    bindir, port = bins[-1].parent, free_port()
    data = Path(tempfile.mkdtemp(prefix="rewardlab-pg-"))
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        shutil.chown(data, "postgres")
    pgdata = data / "data"

    def pg(*args):
        subprocess.run([*run_as, *map(str, args)], check=True, capture_output=True, timeout=120)

    try:
        pg(bindir / "initdb", "-D", pgdata, "-U", "rewardlab", "-A", "trust", "--no-sync")
        pg(bindir / "pg_ctl", "-D", pgdata, "-w", "-l", data / "log", "-o",
           f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        yield f"postgresql+psycopg://rewardlab@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(Exception):
            pg(bindir / "pg_ctl", "-D", pgdata, "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)
