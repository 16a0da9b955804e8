"""Ctrl-C in `v4c chat`, sent as SIGINT to the real command: during a reply it stops that
reply and the conversation goes on (the next turn is answered, and can be stopped too); an
empty line then ends the chat with exit code 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from tests.e2e.conftest import cli_env


def _collect(stream, into: list[str]) -> None:
    for chunk in iter(lambda: stream.read(1), ""):
        into.append(chunk)


def _wait_for(text: list[str], needle: str, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while needle not in "".join(text):
        assert time.monotonic() < end, f"no {needle!r} in {''.join(text)!r}"
        time.sleep(0.05)


def test_ctrl_c_stops_the_reply_and_keeps_the_conversation(cache, tiny, tmp_path):
    chat = subprocess.Popen(
        [sys.executable, "-m", "v4c", "chat", "--checkpoint", str(tiny),
         "--max-new-tokens", "2000", "--seed", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(cache, tmp_path / "home"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not inherited ignored
    )  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    for stream, into in ((chat.stdout, out), (chat.stderr, err)):
        threading.Thread(target=_collect, args=(stream, into), daemon=True).start()
    try:
        chat.stdin.write("Hello\n")
        chat.stdin.flush()
        _wait_for(out, " ")  # the reply is streaming
        os.kill(chat.pid, signal.SIGINT)
        _wait_for(err, "[interrupted after ")
        assert "[interrupted after 0 " not in "".join(err)
        streamed = len(out)
        chat.stdin.write("And now?\n")
        chat.stdin.flush()
        end = time.monotonic() + 90
        while len(out) < streamed + 2:  # the second turn is answered, after the first reply
            assert time.monotonic() < end and chat.poll() is None, "".join(err)
            time.sleep(0.05)
        os.kill(chat.pid, signal.SIGINT)
        _wait_for(err, "]\n> [interrupted after ")
        chat.stdin.write("\n")
        chat.stdin.flush()
        assert chat.wait(timeout=60) == 0
    finally:
        chat.kill()
    assert "Traceback" not in "".join(err)
