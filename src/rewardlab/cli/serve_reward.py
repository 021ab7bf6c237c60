"""``rewardlab serve-reward``: one reward behind HTTP, with dynamic batching."""

from __future__ import annotations

from typing import Optional

import typer

from .common import app, console, err_console, fail


@app.command("serve-reward")
def serve_reward(
    reward: str = typer.Option(..., help="The reward to serve (see `rewardlab rewards list`)."),
    option: list[str] = typer.Option([], "--set", help="A reward option, REWARD.KEY=VALUE (repeatable), "
                                     "e.g. --set shapeclip.device=cuda"),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on; 0.0.0.0 opens the server to the network."),
    port: int = typer.Option(8765, min=0, max=65535, help="Port (0: any free one, printed)."),
    max_batch: int = typer.Option(64, min=1, help="Most images per reward call."),
    max_wait_ms: float = typer.Option(5.0, min=0.0, help="How long a batch waits for more images after its first."),
    max_queue: int = typer.Option(1024, min=1, help="Most images waiting; beyond it requests get 503 (retry later)."),
    timeout: float = typer.Option(30.0, min=0.001, help="Seconds a request may wait for its scores (then 504)."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch CPU threads of the reward (default: the "
                                          "machine's cores less one, left to HTTP and decoding)."),
    token: Optional[str] = typer.Option(None, envvar="REWARDLAB_TOKEN",
                                        help="Token that /score requests must carry as 'Authorization: Bearer TOKEN'."),
):
    """Serve a reward: POST /score takes base64 PNG/JPEG images and prompts and answers their
    scores; requests from many clients are batched into one reward call. GET /health reports
    the queue and the batches so far. Score with it through `--reward remote --set remote.url=...`."""
    try:
        from ..serve.reward_server import is_loopback, listen, serve
    except ImportError as e:
        fail(f"the reward server needs the serve extra ({e.name} is missing): pip install 'rewardlab[serve]'")
    from .evaluate import load_judge

    if not is_loopback(host) and not token:
        fail(f"--host {host} opens the server to the network: give it a --token (or REWARDLAB_TOKEN)")
    scorer = load_judge(reward, option)
    try:
        sock = listen(host, port)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    if not is_loopback(host):
        err_console.print(f"warning: listening on {host}: the reward server is reachable from the network")
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    console.print(f"serving {scorer.name} on http://{shown}:{sock.getsockname()[1]} (POST /score, GET /health)",
                  soft_wrap=True)
    serve(scorer, sock=sock, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
          timeout_s=timeout, token=token or None, threads=threads)

