"""`v4c serve` as a user runs it, on the embedded tiny model: it says what it loaded and
where it listens; SIGTERM while a reply streams ends that reply with a finish reason, the
server stops, and the process exits 0."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import openai
import pytest

pytestmark = pytest.mark.slow


def test_serve_starts_says_where_and_stops_cleanly_on_sigterm():
    args = ["serve", "--port", "0", "--max-seq", "128", "--max-batch", "2", "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "v4c", *args], stderr=subprocess.PIPE, text=True)
    try:
        said, deadline = [], time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "v4c serve ended before listening:\n" + "".join(said)
            said.append(line)
            if found := re.search(r"on (http://127\.0\.0\.1:\d+)/v1", line):
                break
        assert found, "".join(said)
        assert any("max_seq 128" in line for line in said)  # what it loaded, and its limits
        client = openai.OpenAI(base_url=f"{found[1]}/v1", api_key="x", max_retries=0, timeout=60)
        (model,) = client.models.list().data
        stream = client.chat.completions.create(
            model=model.id, messages=[{"role": "user", "content": "Hi"}], max_tokens=100,
            temperature=0, stream=True,
        )  # fmt: skip
        chunks = iter(stream)
        next(chunks), next(chunks)  # the role, then the first token
        proc.send_signal(signal.SIGTERM)
        rest = list(chunks)
        assert rest[-1].choices[0].finish_reason == "abort"
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
