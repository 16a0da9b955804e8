"""`v4c chat` on a terminal and Ctrl-C, as a user meets them: the real command on a pseudo
terminal (its controlling terminal, so Ctrl-C is the terminal's own SIGINT to the process
group and readline edits the line), and `v4c run` stopped by Ctrl-C, in one process and
over two ranks.

Chat: the welcome line; a line edited with Backspace and recalled from the history with Up
(a command, so no reply is needed to see it); an empty line is nothing; Ctrl-C during a
reply stops it with the speed line and the conversation goes on (the next turn is
answered, and can be stopped too); /exit ends with code 0. Run: Ctrl-C ends with 130 and
the speed line, the same with --tp 2.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

import pytest

from tests.e2e.conftest import cli_env

UP, BACKSPACE, CTRL_C = b"\x1b[A", b"\x7f", b"\x03"


class Terminal:
    """A process on a pseudo terminal: what it printed (stdout and stderr alike)."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            # a SIGINT ignored or blocked in this test process (by whatever ran in it before)
            # would be inherited through exec, and Ctrl-C never reach the command
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execve(sys.executable, [sys.executable, "-m", "v4c", *argv], env)
        self.seen = b""

    def read(self, timeout: float = 0.1) -> None:
        while select.select([self.fd], [], [], timeout)[0]:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child ended
                return
            if not chunk:
                return
            self.seen += chunk
            timeout = 0.05

    def wait_for(self, needle: bytes, after: int = 0, timeout: float = 120) -> int:
        """Where `needle` appears after offset `after`, waiting up to `timeout` s."""
        end = time.monotonic() + timeout
        while (at := self.seen.find(needle, after)) < 0:
            assert time.monotonic() < end, f"no {needle!r} in {self.seen[after:]!r}"
            self.read()
        return at + len(needle)

    def wait_for_more(self, after: int, n: int = 20, timeout: float = 120) -> None:
        """Until `n` more bytes came after offset `after` (a reply is streaming)."""
        end = time.monotonic() + timeout
        while len(self.seen) < after + n:
            assert time.monotonic() < end, f"nothing streams after {self.seen[after:]!r}"
            self.read()

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_code(self, timeout: float = 60) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.read()
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        raise AssertionError(f"still running: {self.seen[-400:]!r}")

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def terminal(cache, tmp_path):
    opened = []

    def start(*argv: str) -> Terminal:
        opened.append(Terminal(list(argv), cli_env(cache, tmp_path / "home")))
        return opened[-1]

    yield start
    for t in opened:
        t.close()


def test_chat_on_a_terminal(terminal, tiny):
    chat = terminal("chat", str(tiny), "--max-new-tokens", "2000", "--seed", "1")  # MODEL first
    at = chat.wait_for(b"/exit or Ctrl-D ends")
    at = chat.wait_for(b"> ", at)
    chat.send(b"/thinkinx" + BACKSPACE + b"g\r")  # edited: /thinking
    at = chat.wait_for(b"[thinking on]", at)
    chat.send(b"\r")  # an empty line: nothing happens
    chat.send(UP + b"\r")  # the last line again, from the history
    at = chat.wait_for(b"[thinking off]", at)
    assert b"^[[A" not in chat.seen
    chat.send(b"Hello\r")
    chat.wait_for_more(chat.wait_for(b"Hello\r\n", at))  # the reply is streaming
    chat.send(CTRL_C)
    at = chat.wait_for(b" new (interrupted); prefill ", at)
    at = chat.wait_for(b"> ", at)
    chat.send(b"And now?\r")
    chat.wait_for_more(chat.wait_for(b"And now?\r\n", at))
    chat.send(CTRL_C)
    at = chat.wait_for(b" new (interrupted); prefill ", at)
    chat.wait_for(b"> ", at)
    chat.send(b"/exit\r")
    assert chat.exit_code() == 0
    assert b"Traceback" not in chat.seen
    assert b"[0 prompt tokens" not in chat.seen


@pytest.mark.parametrize("ranks", [(), ("--tp", "2")], ids=["one process", "tp2"])
def test_ctrl_c_ends_run_with_the_speed_line_and_130(terminal, tiny, ranks):
    run = terminal("run", "--checkpoint", str(tiny), "--prompt", "Hello", "--max-new-tokens",
                   "4000", "--max-seq", "8192", "--speculative", "off", *ranks)  # fmt: skip
    at = run.wait_for(b"speculative off (")
    run.wait_for_more(at)  # the reply is streaming
    run.send(CTRL_C)
    assert run.exit_code() == 130, run.seen[-600:]
    run.wait_for(b" new (interrupted); prefill ", at)
    assert b"Traceback" not in run.seen
