"""Eight annotators voting at once through `rewardlab annotate`: every vote stored exactly once,
on SQLite and on a real PostgreSQL server."""

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rewardlab.serve.store import VoteStore
from tests.helpers.serving import free_port, make_source, postgres_server

ANNOTATORS, VOTES = 8, 100


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'votes.db'}"
    else:
        with postgres_server() as url:
            yield url


def _serve(source, db, port):
    cmd = [sys.executable, "-m", "rewardlab.cli", "annotate", "--source", str(source), "--db", db, "--token", "t",
           "--votes-per-pair", str(ANNOTATORS), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/progress", headers={"Authorization": "Bearer t"}).is_success:
                return proc
        except httpx.TransportError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read())
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("annotate server did not start")


def _annotate(url: str, name: str) -> list[int]:
    codes = []
    auth = {"Authorization": "Bearer t"}
    with httpx.Client(base_url=url, headers=auth, timeout=60) as client, \
            httpx.Client(base_url=url, headers=auth, timeout=60) as tab, ThreadPoolExecutor(2) as both:
        for k in range(VOTES):
            pair = client.get("/api/next", params={"annotator": name}).json()["pair"]
            vote = {"pair_id": pair["id"], "annotator": name, "choice": ("a", "b", "tie")[k % 3]}
            if k % 25 == 0:  # the same vote from two tabs at once: the database keeps exactly one
                sent = [both.submit(c.post, "/api/votes", json=vote) for c in (client, tab)]
                codes += [f.result().status_code for f in sent]
            else:
                codes.append(client.post("/api/votes", json=vote).status_code)
    return codes


def test_eight_annotators_lose_and_duplicate_nothing(tmp_path, db_url):
    source = make_source(tmp_path / "src", prompts=12, images=6)  # 12 × min(10, C(6, 2)) = 120 pairs
    port = free_port()
    proc = _serve(source, db_url, port)
    try:
        with ThreadPoolExecutor(ANNOTATORS) as pool:
            codes = list(pool.map(lambda i: _annotate(f"http://127.0.0.1:{port}", f"ann{i}"), range(ANNOTATORS)))
    finally:
        proc.terminate()
        proc.wait(30)
    for c in codes:
        assert c.count(201) == VOTES and c.count(409) == 4 and len(c) == VOTES + 4
    votes = VoteStore(db_url).votes()
    assert len(votes) == ANNOTATORS * VOTES
    assert len({(v["pair_id"], v["annotator"]) for v in votes}) == ANNOTATORS * VOTES
    assert {v["annotator"] for v in votes} == {f"ann{i}" for i in range(ANNOTATORS)}
