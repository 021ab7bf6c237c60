"""The annotation app's API, store, sources and export, in process (fastapi's TestClient)."""

import json
import os

import pytest
from fastapi.testclient import TestClient

from rewardlab.data.preferences import decode_png, load_preferences
from rewardlab.serve.annotate import create_app
from rewardlab.serve.export import export_votes
from rewardlab.serve.sources import SourceError, open_source
from rewardlab.serve.store import VoteStore
from tests.helpers.serving import make_source

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def setup(tmp_path):
    src = open_source(make_source(tmp_path / "src", prompts=3, images=3))
    store = VoteStore(f"sqlite:///{tmp_path / 'votes.db'}")
    store.add_pairs(src.pairs(max_per_prompt=10))
    store.bind_source(str(src.root), src.fingerprint())
    return store, src, TestClient(create_app(store, src, TOKEN, votes_per_pair=2))


def test_every_api_call_needs_the_token(setup):
    store, _, client = setup
    assert client.get("/").status_code == 200  # the page itself holds nothing; it asks for the token
    calls = [("get", "/api/next?annotator=ann"), ("get", "/api/progress"), ("get", "/api/pairs/1/a"),
             ("post", "/api/votes")]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN + "x"}):
        for method, url in calls:
            kwargs = {"json": {"pair_id": 1, "annotator": "ann", "choice": "a"}} if method == "post" else {}
            assert getattr(client, method)(url, headers=headers, **kwargs).status_code == 401
    assert store.votes() == []


def test_vote_round_trip_and_pair_assignment(setup):
    store, src, client = setup
    n_pairs = store.progress(None, 2)["pairs"]
    assert n_pairs == 9  # 3 prompts × C(3, 2)
    for annotator in ("ann", "bob", "cy"):
        while True:
            nxt = client.get(f"/api/next?annotator={annotator}", headers=AUTH).json()
            if nxt["pair"] is None:
                break
            pair = nxt["pair"]
            assert {pair["left"], pair["right"]} == {"a", "b"}
            img = client.get(f"/api/pairs/{pair['id']}/{pair['left']}", headers=AUTH)
            assert img.status_code == 200 and img.headers["content-type"] == "image/png"
            assert decode_png(img.content).shape == (32, 32, 3)
            r = client.post("/api/votes", headers=AUTH, json={"pair_id": pair["id"], "annotator": annotator,
                                                              "choice": pair["left"]})
            assert r.status_code == 201
    votes = store.votes()
    per_pair = {}
    for v in votes:
        per_pair[v["pair_id"]] = per_pair.get(v["pair_id"], 0) + 1
    assert sorted(per_pair.values()) == [2] * n_pairs  # every pair exactly its 2 votes, then no more work
    assert client.get("/api/progress", headers=AUTH).json()["done"] == 2 * n_pairs


def test_bad_votes_are_refused_and_nothing_is_stored(setup):
    store, _, client = setup
    vote = {"pair_id": 1, "annotator": "ann", "choice": "a"}
    assert client.post("/api/votes", headers=AUTH, json={**vote, "pair_id": 999}).status_code == 404
    assert client.post("/api/votes", headers=AUTH, json={**vote, "choice": "left"}).status_code == 422
    assert client.post("/api/votes", headers=AUTH, json={**vote, "annotator": "a b/../c"}).status_code == 422
    assert client.post("/api/votes", headers=AUTH, json={"pair_id": "x"}).status_code == 422
    assert store.votes() == []
    assert client.post("/api/votes", headers=AUTH, json=vote).status_code == 201
    assert client.post("/api/votes", headers=AUTH, json={**vote, "choice": "b"}).status_code == 409
    assert [v["choice"] for v in store.votes()] == ["a"]


def test_images_cannot_escape_the_source(setup, tmp_path):
    store, src, client = setup
    (tmp_path / "secret.png").write_bytes(b"not for you")
    for url in ("/api/pairs/1/c", "/api/pairs/1/..%2F..%2Fsecret.png", "/api/pairs/999/a"):
        assert client.get(url, headers=AUTH).status_code == 404
    assert client.get("/api/pairs/1/../../secret.png", headers=AUTH).status_code == 404
    with pytest.raises(SourceError, match="outside the source folder"):
        src.image("../secret.png")
    # a database that names a path outside the source (edited by hand) still gets nothing
    store.add_pairs([("evil", "a photo of a circle", "../secret.png", "/etc/passwd")])
    evil = max(v for v in range(1, 20) if store.pair(v))
    for side in "ab":
        assert client.get(f"/api/pairs/{evil}/{side}", headers=AUTH).status_code == 404
    os.symlink(tmp_path / "secret.png", src.root / "p0" / "link.png")
    with pytest.raises(SourceError, match="outside"):
        src.image("p0/link.png")


def test_a_manifest_that_points_outside_is_refused(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (tmp_path / "x.png").write_bytes(b"")
    (root / "groups.jsonl").write_text(json.dumps({"prompt": "p", "images": ["../x.png", "../x.png"]}) + "\n")
    with pytest.raises(SourceError, match="outside"):
        open_source(root)
    (root / "groups.jsonl").write_text("{not json\n")
    with pytest.raises(SourceError, match="groups.jsonl:1"):
        open_source(root)
    with pytest.raises(SourceError, match="no such folder"):
        open_source(tmp_path / "missing")


def test_search_and_parquet_sources(tmp_path):
    from rewardlab.data.preferences import make_shapeworld_preferences, save_preferences

    run = tmp_path / "search"
    make_source(run, prompts=1, images=4)
    files = json.loads((run / "groups.jsonl").read_text())["images"]
    (run / "groups.jsonl").unlink()
    (run / "trace.json").write_text(json.dumps({"prompts": [{"prompt": "a photo of a circle",
                                                             "ranked": [{"file": f} for f in files]}]}))
    assert len(open_source(run).pairs(max_per_prompt=3)) == 3
    prefs = tmp_path / "p.parquet"
    save_preferences(make_shapeworld_preferences(5, seed=1), prefs)
    src = open_source(prefs)
    pairs = src.pairs()
    assert len(pairs) == 5 and pairs[0][2] == "row:0:a"
    assert decode_png(src.image("row:4:b")[0]).shape == (32, 32, 3)
    with pytest.raises(SourceError):
        src.image("row:5:a")


def test_resume_and_export(setup, tmp_path):
    store, src, client = setup
    first = client.get("/api/next?annotator=ann", headers=AUTH).json()["pair"]
    client.post("/api/votes", headers=AUTH, json={"pair_id": first["id"], "annotator": "ann", "choice": "a"})
    second = client.get("/api/next?annotator=ann", headers=AUTH).json()["pair"]
    client.post("/api/votes", headers=AUTH, json={"pair_id": second["id"], "annotator": "ann", "choice": "tie"})
    # a restart: a new store on the same database adds no pairs and keeps the votes
    again = VoteStore(store.url)
    assert again.add_pairs(src.pairs(max_per_prompt=10)) == 0
    assert again.progress("ann", 2)["mine"] == 2
    assert again.next_pair("ann", 2).id not in (first["id"], second["id"])
    out = tmp_path / "prefs.parquet"
    assert export_votes(again, out) == 2
    rows = load_preferences(out)
    assert rows["label"] == [1.0, 0.5]
    pair = again.pair(first["id"])
    assert rows["image_a"][0] == src.image(pair.image_a)[0] and rows["prompt"][0] == pair.prompt


def test_a_database_serves_one_source(setup, tmp_path):
    store, src, _ = setup
    other = open_source(make_source(tmp_path / "other", prompts=2, images=2))
    with pytest.raises(ValueError, match="holds the votes on"):
        store.bind_source(str(other.root), other.fingerprint())
    store.bind_source(str(src.root), src.fingerprint())  # the same source again: fine
    (src.root / "p0" / "img0.png").write_bytes((src.root / "p1" / "img1.png").read_bytes() + b"\0" * 7)
    changed = open_source(src.root)
    with pytest.raises(ValueError, match="changed"):
        store.bind_source(str(changed.root), changed.fingerprint())
    store.vote(1, "ann", "a")
    with pytest.raises(ValueError, match="not those"):
        export_votes(store, tmp_path / "x.parquet")


def test_a_pair_drawn_either_way_round_is_one_pair(tmp_path):
    src = open_source(make_source(tmp_path / "src", prompts=2, images=4))
    keys = {k for seed in range(5) for k, *_ in src.pairs(max_per_prompt=3, seed=seed)}
    assert len(keys) <= 2 * 6  # C(4, 2) pairs per prompt however often they are drawn
    store = VoteStore(f"sqlite:///{tmp_path / 'v.db'}")
    for seed in range(5):
        store.add_pairs(src.pairs(max_per_prompt=3, seed=seed))
    assert store.progress(None, 1)["pairs"] == len(keys)
