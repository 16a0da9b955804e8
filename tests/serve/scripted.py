"""Servers for the serve tests: an engine behind the real app on the loopback, in a thread
of the test process (uvicorn on a socket bound to port 0), and the real `openai` client
pointed at it.

The scripted engine stands in for the model where a test needs a known reply (a DSML tool
call, reasoning) or a slow step (a full queue): each row answers the tokens of a script,
the first after its prompt, the next after each decode step."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import openai
import torch

from v4c.runtime.scheduler import Scheduler
from v4c.serve.app import create_app
from v4c.serve.server import bind, make_server
from v4c.serve.state import ServeState


class ScriptedEngine:
    """A `RowEngine` whose every row replies `script` (token ids), one per step, taking
    `delay` seconds a step."""

    def __init__(self, vocab: int, script: list[int], *, max_batch=4, max_seq=512, delay=0.0):
        self.vocab, self.script, self.delay = vocab, list(script), delay
        self.max_batch, self.max_seq = max_batch, max_seq
        self.steps_of: list[int] = []
        self.fed: list[list[int]] = []  # per row, every token fed since it was cleared

    def reset(self, batch: int) -> None:
        self.steps_of, self.fed = [0] * batch, [[] for _ in range(batch)]

    def clear_row(self, row: int) -> None:
        self.steps_of[row], self.fed[row] = 0, []

    def forward(self, tokens: list[list[int]]) -> torch.Tensor:
        time.sleep(self.delay)
        logits = torch.full((len(tokens), self.vocab), float("nan"))
        for row, ids in enumerate(tokens):
            if not ids:
                continue
            self.fed[row] += ids
            self.steps_of[row] = 0 if len(ids) > 1 else self.steps_of[row] + 1
            logits[row] = float("-inf")  # the script's token whatever the sampling
            logits[row, self.script[min(self.steps_of[row], len(self.script) - 1)]] = 0.0
        return logits


class Server:
    """A running app: its URL, its scheduler and an `openai` client for it."""

    def __init__(self, state: ServeState, api_key: str = "none"):
        self.state, self.scheduler = state, state.scheduler
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = make_server(create_app(state), state.scheduler)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]})
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        self.client = self.make_client(api_key)

    def make_client(self, api_key: str = "none", **kwargs) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60, **kwargs
        )

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0,
                                  timeout=60)  # fmt: skip

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until no request runs or waits; False if that takes longer than `timeout`."""
        deadline = time.monotonic() + timeout
        while self.scheduler.running or self.scheduler.waiting:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@contextmanager
def serving(engine, tokenizer, *, name="test-model", api_key=None, **scheduler_options):
    scheduler = Scheduler(engine, tokenizer, **scheduler_options)
    server = Server(ServeState(scheduler, tokenizer, name, api_key))
    try:
        yield server
    finally:
        server.stop()
