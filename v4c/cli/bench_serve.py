"""`v4c bench --serve`: start `v4c serve` (or use --url), load it with the `openai` client,
report throughput, TTFT and TPOT (v4c.serve.bench).

Why a separate process for the server: the client's own work (HTTP, JSON, the client's
models) must not share the server's interpreter, or the figures would measure both."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer

from v4c.errors import V4CError


def bench_serve(
    target: str | None,
    *,
    url: str | None,
    requests: int,
    concurrency: int,
    prompt_len: int,
    max_tokens: int,
    device: str | None,
    json_file: Path | None,
) -> None:
    from rich.progress import Progress

    from v4c.serve.bench import format_result, run_load

    server = None
    if url is None:
        max_seq = prompt_len + max_tokens
        server, url = _start_server(target, concurrency, max_seq, device)
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("requests", total=requests)
            result = asyncio.run(run_load(
                url, requests=requests, concurrency=concurrency, prompt_len=prompt_len,
                max_tokens=max_tokens, on_done=lambda: progress.advance(task),
            ))  # fmt: skip
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
    for line in format_result(result):
        typer.echo(line)
    if json_file is not None:
        json_file.write_text(json.dumps(result.as_dict(), indent=2) + "\n")


def _start_server(target: str | None, rows: int, max_seq: int, device: str | None):
    """`v4c serve` on a free port, once it listens: (process, its URL)."""
    args = ["serve", "--port", "0", "--max-batch", str(rows), "--max-seq", str(max_seq)]
    if target is not None:
        args += ["--checkpoint", target]
    if device is not None:
        args += ["--device", device]
    proc = subprocess.Popen([sys.executable, "-m", "v4c", *args], stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    said: list[str] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        said.append(line)
        typer.echo(f"[server] {line.rstrip()}", err=True)
        if found := re.search(r" on (http://\S+?)/v1 ", line):
            # keep reading what the server says, or its pipe fills and it blocks
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, found[1]
    proc.kill()
    raise V4CError("v4c serve did not start:\n" + "".join(said[-10:]))
