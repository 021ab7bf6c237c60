"""``RemoteReward``: a reward scored by a reward server (``rewardlab serve-reward``).

Images travel as PNG (uint8, lossless), in chunks of ``batch_size``, over one reused
connection pool. Connection errors, 503 (busy) and 504 (timed out) are retried with
exponential backoff; after the last try, or on any other error, ``RewardError`` says what
the server answered."""

from __future__ import annotations

import base64
import io
import math
import os
import socket
import time

import numpy as np
import torch
from PIL import Image

from ..rewards.base import Reward, RewardError, RewardOutput
from ..rewards.registry import register

RETRY_STATUS = (503, 504)


class RemoteReward(Reward):
    name = "remote"
    differentiable = False

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 0.25, batch_size: int = 64):
        import httpx  # only the client needs it

        if not url or not str(url).startswith(("http://", "https://")):
            raise ValueError(f"reward 'remote' needs the server's url, e.g. --set remote.url=http://127.0.0.1:8765"
                             f"{f'; got {url!r}' if url else ''}")
        if batch_size < 1 or retries < 0:
            raise ValueError(f"reward 'remote': batch_size must be ≥ 1 and retries ≥ 0, "
                             f"got {batch_size} and {retries}")
        self.url, self.retries, self.backoff, self.batch_size = url.rstrip("/"), retries, backoff, batch_size
        token = os.environ.get("REWARDLAB_TOKEN") if token is None else token
        if token is not None and not isinstance(token, str):  # --set read it as a number or a bool
            raise ValueError(f"reward 'remote': the token must be text; quote it (--set \"remote.token='{token}'\") "
                             f"or set REWARDLAB_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # TCP_NODELAY: httpx sends headers and body in two writes, and with Nagle the body waits
        # for the server's delayed ACK (40-200 ms a request). Every connection is kept alive, so
        # that many threads sharing this reward do not reconnect at each call.
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
                                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self._httpx = httpx

    def score(self, images, prompts, metadata):
        arrays, parts = uint8(images), []
        for start in range(0, len(arrays), self.batch_size):
            end = start + self.batch_size
            parts.append(self._post({"prompts": prompts[start:end],
                                     "images": [encode_png(a) for a in arrays[start:end]],
                                     "metadata": None if metadata is None else list(metadata[start:end])}))
        return merge(parts)

    def _post(self, payload: dict) -> dict:
        """POST one chunk, retrying connection errors, 503 and 504 with exponential backoff."""
        httpx = self._httpx
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = self.client.post("/score", json=payload)
            except httpx.TransportError as e:
                problem = f"is not reachable after {tries(attempt + 1)} ({type(e).__name__}: {e or 'no answer'})"
                continue
            except (TypeError, ValueError) as e:  # metadata that JSON cannot carry
                raise RewardError(f"cannot send the request to the reward server at {self.url}: {e}") from None
            if resp.status_code == 200:
                return answer(resp, len(payload["images"]), self.url)
            problem = f"answered {resp.status_code}: {detail(resp)}"
            if resp.status_code not in RETRY_STATUS:
                break
            problem += f" (after {tries(attempt + 1)})"
        raise RewardError(f"reward server at {self.url} {problem}")

    def close(self) -> None:
        self.client.close()


def uint8(images: torch.Tensor) -> np.ndarray:
    """``rewardlab.images.to_uint8`` in numpy, bit for bit: torch's intra-op threads, on tiny
    tensors in many client threads on a busy machine, can take milliseconds to round."""
    arr = np.clip(np.nan_to_num(images.detach().float().cpu().numpy()), 0, 1) * np.float32(255)
    return np.rint(arr).astype(np.uint8).transpose(0, 2, 3, 1)


def encode_png(image) -> str:
    """uint8 ``[H, W, 3]`` → base64 PNG (fast compression: it is lossless either way)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def tries(n: int) -> str:
    return "1 try" if n == 1 else f"{n} tries"


def answer(resp, n: int, url: str) -> dict:
    """The JSON of a 200 answer for ``n`` images, checked enough to merge safely."""
    try:
        data = resp.json()
        if len(data["scores"]) == len(data["valid"]) == n and isinstance(data["sub_scores"], dict):
            return data
    except (ValueError, KeyError, TypeError):
        pass
    raise RewardError(f"reward server at {url} sent an answer that is not scores for {n} images: {resp.text[:200]}")


def detail(resp) -> str:
    try:
        return str(resp.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:200] or resp.reason_phrase


def merge(parts: list[dict]) -> RewardOutput:
    """The server's JSON answers, chunk after chunk, as one ``RewardOutput``."""
    def column(values):
        return torch.tensor([math.nan if v is None else v for v in values], dtype=torch.float32)

    sizes = [len(p["scores"]) for p in parts]
    names = dict.fromkeys(k for p in parts for k in p["sub_scores"])
    subs = {k: column([v for p, n in zip(parts, sizes) for v in p["sub_scores"].get(k, [None] * n)]) for k in names}
    reasons = None
    if any(p.get("reasons") is not None for p in parts):
        reasons = [r for p, n in zip(parts, sizes) for r in (p.get("reasons") or [""] * n)]
    return RewardOutput(column([s for p in parts for s in p["scores"]]), subs,
                        torch.tensor([v for p in parts for v in p["valid"]], dtype=torch.bool), reasons)


register("remote", "a reward served by `rewardlab serve-reward` (url=http://HOST:PORT, token=...); "
                   "not differentiable")(RemoteReward)
