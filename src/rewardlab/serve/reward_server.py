"""A reward behind HTTP with dynamic batching: ``POST /score`` and ``GET /health``.

Requests go into one queue; a single batcher task gathers up to ``max_batch`` images
(waiting at most ``max_wait_ms`` after the first one arrived, and only while more requests
are being decoded), groups them by image size
— a reward takes one ``[B,3,H,W]`` tensor — and calls the reward in ONE worker thread
(torch models are not re-entrant), then hands each request its own slice of the result.
The queue is bounded (503 with Retry-After when full), a request waits at most
``timeout_s`` (504), and a reward that raises fails only the requests it was scoring (500).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import io
import ipaddress
import math
import os
import socket
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from ..images import MAX_PIXELS, pil_to_array
from ..rewards.base import Reward


class ScoreRequest(BaseModel):
    prompts: list[str]
    images: list[str]  # base64 PNG or JPEG bytes
    metadata: Optional[list[Optional[dict[str, Any]]]] = None


class Job:
    """One request's images on their way through the batcher, and its answer."""

    def __init__(self, arrays: list[np.ndarray], prompts: list[str], metadata, future: asyncio.Future):
        self.arrays, self.prompts, self.metadata, self.future = arrays, prompts, metadata, future
        self.arrived = time.monotonic()
        n = len(arrays)
        self.scores, self.valid, self.reasons = [0.0] * n, [False] * n, None
        self.sub_scores: dict[str, list] = {}
        self.error: str | None = None

    def put(self, i: int, row: int, scores, valid, sub_scores, reasons) -> None:
        """Image ``i`` of this request was row ``row`` of a reward call."""
        self.scores[i], self.valid[i] = scores[row], valid[row]
        for name, values in sub_scores.items():
            self.sub_scores.setdefault(name, [None] * len(self.arrays))[i] = values[row]
        if reasons is not None:
            self.reasons = self.reasons or [""] * len(self.arrays)
            self.reasons[i] = reasons[row]

    def answer(self) -> dict:
        return {"scores": self.scores, "valid": self.valid, "sub_scores": self.sub_scores, "reasons": self.reasons}


class Batcher:
    """The queue, the batcher task and the one worker thread that runs the reward."""

    def __init__(self, reward: Reward, max_batch: int, max_wait_ms: float, max_queue: int, threads: int):
        self.reward, self.max_batch, self.max_wait, self.max_queue = reward, max_batch, max_wait_ms / 1000, max_queue
        self.jobs: deque[Job] = deque()
        self.arrived = asyncio.Event()
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="reward", initializer=torch.set_num_threads,
                                         initargs=(threads,))
        self.queued = self.batches = self.images = 0  # images not yet answered; reward calls; images scored
        self.decoding = 0  # requests accepted and still being decoded: they will join the queue soon

    def full(self, n: int) -> bool:
        return self.queued + n > self.max_queue

    async def score(self, body: ScoreRequest, timeout_s: float) -> Job:
        """Decode the request's images off the event loop, queue them and wait for their
        scores; 504 after ``timeout_s``."""
        loop, n = asyncio.get_running_loop(), len(body.images)
        self.queued += n
        self.decoding += 1
        try:
            try:
                arrays = await loop.run_in_executor(None, decode, body.images)
            finally:
                self.decoding -= 1
            job = Job(arrays, body.prompts, body.metadata, loop.create_future())
            self.jobs.append(job)
            self.arrived.set()
            await asyncio.wait_for(job.future, timeout_s)
            return job
        except asyncio.TimeoutError:
            raise HTTPException(504, f"not scored within {timeout_s:g} s; the server is overloaded") from None
        finally:
            self.queued -= n

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self.collect()
            if not jobs:
                continue
            try:
                await loop.run_in_executor(self.worker, self.score_jobs, jobs)
            except Exception as e:  # noqa: BLE001  (a bug here must not stop the batcher)
                for job in jobs:
                    job.error = f"scoring failed: {type(e).__name__}: {e}"
            for job in jobs:
                if not job.future.done():  # a request that timed out is gone
                    job.future.set_result(job)

    async def collect(self) -> list[Job]:
        """Up to ``max_batch`` images of live requests, waiting at most ``max_wait`` after the
        first of them arrived, and only while more requests are being decoded: with none on
        the way a lone client would wait for nothing (under load the queue fills while the
        worker runs)."""
        while not self.jobs:
            self.arrived.clear()
            await self.arrived.wait()
        jobs, n = [], 0
        while n < self.max_batch:
            if not self.jobs:
                left = jobs[0].arrived + self.max_wait - time.monotonic() if jobs and self.decoding else 0
                if left <= 0:
                    break
                self.arrived.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), left)
                continue
            if jobs and n + len(self.jobs[0].arrays) > self.max_batch:
                break
            job = self.jobs.popleft()
            if not job.future.done():
                jobs.append(job)
                n += len(job.arrays)
        return jobs

    def score_jobs(self, jobs: list[Job]) -> None:
        """In the worker thread: one reward call per image size (and per ``max_batch`` images);
        requests with metadata and without are not mixed."""
        groups = defaultdict(list)
        for job in jobs:
            for i, arr in enumerate(job.arrays):
                groups[arr.shape, job.metadata is not None].append((job, i))
        for items in groups.values():
            for start in range(0, len(items), self.max_batch):
                self.score_items(items[start:start + self.max_batch])

    def score_items(self, items: list[tuple[Job, int]]) -> None:
        """Score images of one size; if the reward raises on images of several requests,
        try each request alone so that only the one it fails on gets the error."""
        try:
            images = torch.from_numpy(np.stack([job.arrays[i] for job, i in items])).permute(0, 3, 1, 2).float() / 255
            metadata = [job.metadata[i] for job, i in items] if items[0][0].metadata is not None else None
            with torch.no_grad():
                out = self.reward(images, [job.prompts[i] for job, i in items], metadata)
            scores, valid = out.scores.tolist(), out.valid.tolist()
            subs = {k: [x if math.isfinite(x) else None for x in v.float().tolist()] for k, v in out.sub_scores.items()}
            for row, (job, i) in enumerate(items):
                job.put(i, row, scores, valid, subs, out.reasons)
        except Exception as e:  # noqa: BLE001  (any reward failure is reported to its requests)
            jobs = list(dict.fromkeys(job for job, _ in items))
            if len(jobs) > 1:
                for job in jobs:
                    self.score_items([it for it in items if it[0] is job])
                return
            jobs[0].error = f"reward {self.reward.name!r} failed: {type(e).__name__}: {e}"
            return
        self.batches += 1
        self.images += len(items)


def decode(images: list[str]) -> list[np.ndarray]:
    """Base64 PNG/JPEG → uint8 ``[H, W, 3]`` arrays; a bad one is a 400 naming its index, and
    a request's images may hold at most ``MAX_PIXELS`` pixels together."""
    arrays, pixels = [], 0
    for i, data in enumerate(images):
        try:
            with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
                pixels += im.width * im.height
                if pixels > MAX_PIXELS:
                    raise ValueError(f"the request's images exceed {MAX_PIXELS} pixels together")
                im.load()
                arrays.append(pil_to_array(im))
        except binascii.Error as e:
            raise HTTPException(400, f"image {i}: not base64 ({e})") from None
        except UnidentifiedImageError:
            raise HTTPException(400, f"image {i}: not a PNG or JPEG image") from None
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise HTTPException(400, f"image {i}: not a readable PNG or JPEG ({e})") from None
    return arrays


def create_app(reward: Reward, max_batch: int = 64, max_wait_ms: float = 5.0, max_queue: int = 1024,
               timeout_s: float = 30.0, token: str | None = None, threads: int | None = None,
               max_body: int = 256 * 2**20) -> FastAPI:
    """The FastAPI app serving ``reward``; the batcher starts and stops with the app. ``threads``:
    torch's CPU threads for the reward (default: one core fewer than the machine's, left to
    HTTP and decoding — torch threads that compete for cores spin at every op)."""
    state: dict[str, Batcher] = {}
    threads = threads or max(1, (os.cpu_count() or 2) - 1)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = state["batcher"] = Batcher(reward, max_batch, max_wait_ms, max_queue, threads)
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.worker.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"rewardlab reward server ({reward.name})", lifespan=lifespan)
    app.add_middleware(Guard, token=token, max_bytes=max_body)

    @app.get("/health")
    async def health():
        b = state["batcher"]
        return {"status": "ok", "reward": reward.name, "queued": b.queued,  # accepted images not yet answered
                "batches": b.batches,
                "images": b.images, "mean_batch": b.images / b.batches if b.batches else 0.0}

    @app.post("/score")
    async def score(body: ScoreRequest):
        b = state["batcher"]
        check_request(body, max_queue)
        if b.full(len(body.images)):
            return JSONResponse({"detail": f"the server is busy: {b.queued} images queued (at most {max_queue})"},
                                503, headers={"Retry-After": "1"})
        job = await b.score(body, timeout_s)
        if job.error:
            raise HTTPException(500, job.error)
        return JSONResponse(job.answer())

    return app


class Guard:
    """ASGI middleware: a ``/score`` request with a wrong token (401), no Content-Length (411)
    or a body over ``max_bytes`` (413) is answered before a byte of its body is read."""

    def __init__(self, app, token: str | None, max_bytes: int):
        self.app, self.token, self.max_bytes = app, token, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/score":
            refusal = self.refusal({k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]})
            if refusal is not None:
                status, detail = refusal
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                return await JSONResponse({"detail": detail}, status, headers=headers)(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, headers: dict[str, str]) -> tuple[int, str] | None:
        if self.token is not None and not token_ok(headers.get("authorization", ""), self.token):
            return 401, "missing or wrong token: send 'Authorization: Bearer TOKEN'"
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            return 411, "send the request with a Content-Length"
        if int(length) > self.max_bytes:
            return 413, f"request body of {int(length)} bytes; the server takes at most {self.max_bytes}"
        return None


def token_ok(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def check_request(body: ScoreRequest, max_images: int) -> None:
    n = len(body.images)
    if n == 0:
        raise HTTPException(400, "no images in the request")
    if n > max_images:
        raise HTTPException(400, f"{n} images in one request; the server takes at most {max_images} "
                                 f"(its max_queue): send smaller requests")
    if len(body.prompts) != n:
        raise HTTPException(400, f"{n} images but {len(body.prompts)} prompts")
    if body.metadata is not None and len(body.metadata) != n:
        raise HTTPException(400, f"{n} images but {len(body.metadata)} metadata entries")


def listen(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one); OSError if it is taken.
    Made with proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets, and without it
    Nagle and delayed ACKs add 40 ms to every request on a kept-alive connection."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(reward: Reward, host: str = "127.0.0.1", port: int = 8765, sock: socket.socket | None = None,
          **opts) -> None:
    """Serve ``reward`` with uvicorn (one process) until interrupted; ``opts`` go to ``create_app``."""
    import uvicorn

    sock = sock or listen(host, port)
    config = uvicorn.Config(create_app(reward, **opts), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
