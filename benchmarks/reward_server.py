"""Images per second of ``shapeclip`` through the reward server vs scored in-process.

    python benchmarks/reward_server.py [--clients 1,8,32] [--images 4] [--seconds 5]

Each client is a thread of this process that sends requests of ``--images`` ShapeWorld
renders (its own, always the same) for ``--seconds``: in-process it calls the reward on
them directly (one shared reward object, as threads of a trainer would; the better of torch's
default thread count and 1 thread counts), through the server it calls a ``RemoteReward`` of
its own, against `rewardlab serve-reward` running in a separate process with its default
settings. The two alternate per client count.
Writes benchmarks/results/reward_server.json and .md.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import torch

from rewardlab.images import to_tensor
from rewardlab.rewards import load
from rewardlab.serve.remote import RemoteReward
from rewardlab.world.prompts import PromptSampler
from rewardlab.world.render import render_record

RESULTS = Path(__file__).parent / "results"


def client_requests(clients: int, k: int):
    """Each client's K images (decoded as the server sees them: uint8) and prompts."""
    records = PromptSampler("train", seed=0)(clients * k, np.random.default_rng(0))
    images = to_tensor([render_record(r, i) for i, r in enumerate(records)])
    prompts = [r["prompt"] for r in records]
    return [(images[c * k:(c + 1) * k], prompts[c * k:(c + 1) * k]) for c in range(clients)]


def throughput(scorers, requests, seconds: float) -> float:
    """Images/s of all clients together: client ``c`` calls ``scorers[c]`` on its request until time is up."""
    counts = [0] * len(requests)
    start, stop = threading.Barrier(len(requests) + 1), threading.Event()

    def client(c):
        images, prompts = requests[c]
        scorers[c](images, prompts)  # warm-up (a connection, a first call)
        start.wait()
        while not stop.is_set():
            scorers[c](images, prompts)
            counts[c] += len(images)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(len(requests))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def in_process(reward, requests, seconds: float, default_threads: int) -> tuple[float, int]:
    """The better in-process images/s of torch's default threads and of 1 thread (which can win
    when many client threads share few cores), and the thread count that gave it."""
    best = (0.0, 0)
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        with torch.no_grad():
            best = max(best, (throughput([reward] * len(requests), requests, seconds), threads))
    torch.set_num_threads(default_threads)
    return best


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "rewardlab.cli", "serve-reward", "--reward", "shapeclip",
                             "--port", str(port)], stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError("the reward server did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    ap.add_argument("--images", type=int, default=4, help="images per request (K)")
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    load_before = os.getloadavg()[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, url = start_server(port), f"http://127.0.0.1:{port}"
    local, default_threads = load("shapeclip"), torch.get_num_threads()
    rows = []
    print("| clients | in-process img/s | server img/s | ratio | mean served batch |\n|---|---|---|---|---|")
    try:
        for n in counts:
            requests = client_requests(n, args.images)
            here, threads = in_process(local, requests, args.seconds, default_threads)
            before = httpx.get(url + "/health").json()
            there = throughput([RemoteReward(url) for _ in range(n)], requests, args.seconds)
            after = httpx.get(url + "/health").json()
            batch = (after["images"] - before["images"]) / max(1, after["batches"] - before["batches"])
            rows.append({"clients": n, "in_process": round(here, 1), "in_process_torch_threads": threads,
                         "server": round(there, 1),
                         "ratio": round(there / here, 3), "mean_batch": round(batch, 1)})
            print(f"| {n} | {here:.1f} | {there:.1f} | {there / here:.2f} | {batch:.1f} |")
    finally:
        server.kill()
        server.wait()
    load_after = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reward_server.json").write_text(json.dumps(
        {"rows": rows, "images_per_request": args.images, "seconds": args.seconds, "image_size": 32,
         "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
         "load_average_before_after": [round(load_before, 2), round(load_after, 2)]}, indent=2) + "\n")
    table = "\n".join(f"| {r['clients']} | {r['in_process']} | {r['server']} | {r['ratio']:.2f} | {r['mean_batch']} |"
                      for r in rows)
    (RESULTS / "reward_server.md").write_text(
        f"# python benchmarks/reward_server.py --images {args.images} --seconds {args.seconds:g} "
        f"({os.cpu_count()}-core CPU, load average {load_before:.1f} before the run and {load_after:.1f} after, "
        f"{date.today()})\n\n"
        f"shapeclip on 32x32 ShapeWorld renders, {args.images} images per request; clients are threads.\n\n"
        "| clients | in-process img/s | server img/s | ratio | mean served batch |\n|---|---|---|---|---|\n"
        + table + "\n")


if __name__ == "__main__":
    main()
