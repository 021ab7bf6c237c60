"""The reward server for real on loopback: a `rewardlab serve-reward` process scored by many
RemoteReward clients at once, killed and restarted under them; and the HTTP errors of an
in-process server (uvicorn in a thread) around slow and failing rewards."""

import base64
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rewardlab.cli import app as cli_app
from rewardlab.rewards import Reward, RewardError, RewardOutput, load
from rewardlab.serve.remote import RemoteReward, encode_png
from tests.helpers.serving import free_port

PROMPTS = ["a photo of a red circle", "a photo of two blue squares", "a photo of a green triangle above a circle"]


def wait_healthy(url: str, proc=None, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            return httpx.get(url + "/health", timeout=1).json()
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


class ServerProcess:
    """`rewardlab serve-reward --reward shapeclip` on a fixed loopback port."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        cmd = [sys.executable, "-m", "rewardlab.cli", "serve-reward", "--reward", "shapeclip", "--port",
               str(self.port), "--max-wait-ms", "5"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wait_healthy(self.url, self.proc)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def health(self) -> dict:
        return httpx.get(self.url + "/health").json()


@pytest.fixture(scope="module")
def server():
    s = ServerProcess()
    s.start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def pool():
    """Images (uint8, as the server decodes them) of two sizes, prompts, and their local shapeclip scores."""
    rng = np.random.default_rng(0)
    out = {}
    local = load("shapeclip")
    for size in (32, 24):
        images = torch.from_numpy(rng.integers(0, 256, (24, 3, size, size), dtype=np.uint8)).float() / 255
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(24)]
        out[size] = (images, prompts, local(images, prompts).scores)
    return out


def request(pool, rng):
    """A random request of 1-4 images of one size, and its expected scores."""
    images, prompts, ref = pool[int(rng.choice([32, 24]))]
    idx = rng.choice(len(images), size=int(rng.integers(1, 5)), replace=False).tolist()
    return images[idx], [prompts[i] for i in idx], ref[idx]


def test_many_concurrent_clients_get_local_scores_batched(server, pool):
    before = server.health()
    shared = RemoteReward(server.url)

    def client(seed):
        rng = np.random.default_rng(seed)
        for _ in range(50):
            images, prompts, ref = request(pool, rng)
            out = shared(images, prompts)
            assert out.valid.all() and torch.allclose(out.scores, ref, atol=1e-5), (out.scores, ref)
            assert set(out.sub_scores) == {"cosine"} and out.reasons is None

    with ThreadPoolExecutor(32) as ex:
        list(ex.map(client, range(32)))
    after = server.health()
    batches, images = after["batches"] - before["batches"], after["images"] - before["images"]
    assert images >= 32 * 50 and images / batches > 1, after
    assert after["queued"] == 0


def test_killed_server_fails_clients_clearly_then_restart_serves_them(server, pool):
    clients = [RemoteReward(server.url, retries=2, backoff=0.05, timeout=10) for _ in range(8)]
    errors, ok = [None] * len(clients), [0] * len(clients)

    def run(k):
        rng = np.random.default_rng(100 + k)
        while True:
            images, prompts, ref = request(pool, rng)
            try:
                out = clients[k](images, prompts)
            except RewardError as e:
                errors[k] = str(e)
                return
            assert torch.allclose(out.scores, ref, atol=1e-5)
            ok[k] += 1

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(clients))]
    for t in threads:
        t.start()
    wait_until(lambda: sum(ok) >= 40 or any(errors), timeout=30)
    server.kill()
    t0 = time.monotonic()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a client hung after the server died"
    assert time.monotonic() - t0 < 10
    for e in errors:
        assert e.startswith(f"reward server at {server.url} is not reachable after 3 tries"), e

    server.start()  # the same port; the same client objects reconnect
    rng = np.random.default_rng(7)
    for c in clients:
        images, prompts, ref = request(pool, rng)
        assert torch.allclose(c(images, prompts).scores, ref, atol=1e-5)


# ---- errors, in process: uvicorn in a thread around test rewards ----
class SlowReward(Reward):
    """Mean brightness; sleeps ``delay`` in calls with the prompt 'slow' and raises in calls with
    the prompt 'boom'; records each call's prompts."""

    name = "test"

    def __init__(self):
        self.delay, self.calls = 0.0, []

    def score(self, images, prompts, metadata):
        self.calls.append(list(prompts))
        if "slow" in prompts:
            time.sleep(self.delay)
        if "boom" in prompts:
            raise RuntimeError("boom went the reward")
        return RewardOutput(images.mean((1, 2, 3)), {"half": images.mean((1, 2, 3)) / 2}, reasons=list(prompts))


@pytest.fixture
def local_server():
    """A factory: ``(reward, **create_app options) -> url`` serving in this process."""
    import uvicorn

    from rewardlab.serve.reward_server import create_app, listen

    servers = []

    def start(reward, **opts):
        sock = listen("127.0.0.1", 0)
        srv = uvicorn.Server(uvicorn.Config(create_app(reward, **opts), log_level="warning"))
        thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((srv, thread))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        wait_healthy(url, timeout=10)
        return url

    yield start
    for srv, thread in servers:
        srv.should_exit = True
        thread.join(timeout=5)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def queued(url: str) -> int:
    return httpx.get(url + "/health").json()["queued"]


def png_b64(n, size=8, value=128):
    return [encode_png(np.full((size, size, 3), value, np.uint8)) for _ in range(n)]


def test_token_and_bad_payloads(local_server):
    url = local_server(SlowReward(), token="s3cret")
    body = {"prompts": ["a", "b"], "images": png_b64(2)}
    assert httpx.post(url + "/score", json=body).status_code == 401
    assert httpx.post(url + "/score", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.post(url + "/score", json={"prompts": 3}).status_code == 401  # the token before the body
    with pytest.raises(RewardError, match="answered 401: missing or wrong token"):
        RemoteReward(url, token="nope")(torch.rand(1, 3, 8, 8), ["a"])
    auth = {"Authorization": "Bearer s3cret"}
    ok = httpx.post(url + "/score", json=body, headers=auth)
    assert ok.status_code == 200 and ok.json()["scores"] == pytest.approx([128 / 255] * 2, abs=1e-6)
    assert ok.json()["sub_scores"]["half"] == pytest.approx([64 / 255] * 2, abs=1e-6)
    assert ok.json()["reasons"] == ["a", "b"]
    assert httpx.get(url + "/health").json()["reward"] == "test"  # no token needed

    def detail(payload, status):
        r = httpx.post(url + "/score", json=payload, headers=auth)
        assert r.status_code == status, r.text
        return r.json()["detail"]

    assert detail({"prompts": ["a"], "images": png_b64(2)}, 400) == "2 images but 1 prompts"
    assert detail({"prompts": ["a", "b"], "images": png_b64(1) + ["%%%"]}, 400).startswith("image 1: not base64")
    garbage = base64.b64encode(b"not an image").decode()
    assert detail({"prompts": ["a"], "images": [garbage]}, 400) == "image 0: not a PNG or JPEG image"
    assert detail({"prompts": [], "images": []}, 400) == "no images in the request"
    assert "metadata" in detail({"prompts": ["a"], "images": png_b64(1), "metadata": [{}, {}]}, 400)
    assert "at most 1024" in detail({"prompts": ["a"] * 1025, "images": png_b64(1025, size=1)}, 400)
    detail({"prompts": "a", "images": 3}, 422)
    assert httpx.post(url + "/score", content=b"{", headers=auth).status_code == 422
    big = local_server(SlowReward(), max_body=1000)  # refused from its Content-Length, before the body is read
    r = httpx.post(big + "/score", json={"prompts": ["a"] * 40, "images": png_b64(40)})
    assert r.status_code == 413 and "at most 1000" in r.json()["detail"]

    def chunked():
        yield b'{"prompts": ["a"], "images": []}'

    assert httpx.post(big + "/score", content=chunked()).status_code == 411


def test_full_queue_503_timeout_504_and_failing_batch_500(local_server):
    reward = SlowReward()
    url = local_server(reward, max_queue=4, timeout_s=1.0)
    reward.delay = 0.5
    with ThreadPoolExecutor(2) as ex:
        first = ex.submit(httpx.post, url + "/score", json={"prompts": ["slow"] * 4, "images": png_b64(4)})
        wait_until(lambda: queued(url) == 4)
        busy = httpx.post(url + "/score", json={"prompts": ["a"], "images": png_b64(1)})
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "1" and "busy" in busy.json()["detail"]
        assert first.result().status_code == 200

        reward.delay = 1.5
        late = httpx.post(url + "/score", json={"prompts": ["slow"], "images": png_b64(1)}, timeout=5)
        assert late.status_code == 504 and "not scored within 1 s" in late.json()["detail"]
        time.sleep(0.6)  # let the slow call end

        reward.delay = 0.5  # while a slow call runs, a failing and a good request queue up and are batched
        n = len(reward.calls)
        slow = ex.submit(httpx.post, url + "/score", json={"prompts": ["slow"], "images": png_b64(1)})
        wait_until(lambda: len(reward.calls) > n)
        boom = ex.submit(httpx.post, url + "/score", json={"prompts": ["boom"], "images": png_b64(1)})
        wait_until(lambda: queued(url) == 2)
        good = httpx.post(url + "/score", json={"prompts": ["good"], "images": png_b64(1)})
        assert good.status_code == 200 and slow.result().status_code == 200
        assert boom.result().status_code == 500
        assert boom.result().json()["detail"] == "reward 'test' failed: RuntimeError: boom went the reward"
    assert reward.calls[-3:] == [["boom", "good"], ["boom"], ["good"]]  # batched; on failure, each request alone
    assert httpx.post(url + "/score", json={"prompts": ["a"], "images": png_b64(1)}).status_code == 200
    with pytest.raises(RewardError, match="answered 500: reward 'test' failed"):
        RemoteReward(url)(torch.rand(1, 3, 8, 8), ["boom"])


def test_remote_retries_503_then_gives_up_clearly(local_server):
    reward = SlowReward()
    url = local_server(reward, max_queue=2)
    reward.delay = 0.5
    with ThreadPoolExecutor(1) as ex:
        first = ex.submit(httpx.post, url + "/score", json={"prompts": ["slow"] * 2, "images": png_b64(2)})
        wait_until(lambda: queued(url) == 2)
        with pytest.raises(RewardError, match=r"answered 503: the server is busy.* \(after 2 tries\)"):
            RemoteReward(url, retries=1, backoff=0.01)(torch.rand(1, 3, 8, 8), ["a"])
        assert first.result().status_code == 200
    out = RemoteReward(url, batch_size=2)(torch.rand(3, 3, 8, 8), ["a", "b", "c"])  # in chunks that fit
    assert out.valid.all() and out.reasons == ["a", "b", "c"] and out.sub_scores["half"].shape == (3,)


def test_cli_errors_are_one_line():
    runner = CliRunner()
    result = runner.invoke(cli_app, ["serve-reward", "--reward", "nope"])
    assert result.exit_code == 2 and "unknown reward 'nope'" in result.output
    result = runner.invoke(cli_app, ["serve-reward", "--reward", "shapeworld", "--set", "shapeworld.colour=red"])
    assert result.exit_code == 2 and "has no option colour" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = runner.invoke(cli_app, ["serve-reward", "--reward", "shapeworld", "--port",
                                         str(taken.getsockname()[1])])
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1" in result.output
    result = runner.invoke(cli_app, ["serve-reward", "--reward", "shapeworld", "--host", "0.0.0.0"], env={"REWARDLAB_TOKEN": ""})
    assert result.exit_code == 2 and "give it a --token" in result.output
    with pytest.raises(ValueError, match="needs the server's url"):
        load("remote")
