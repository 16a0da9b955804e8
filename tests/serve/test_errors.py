"""Bad requests get OpenAI's error body with the right status, never a 500 or a traceback:
malformed JSON, wrong types, absurd values, unknown models, roles and routes, tool schemas
that are not JSON Schema, a wrong API key, a body too large, a prompt longer than the
caches, a full queue (429 with Retry-After). Checked with raw HTTP where the `openai`
client would refuse to send the request, and with the client where it maps the status to
its exception."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from tests.serve.scripted import ScriptedEngine, serving

USER = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.fixture(scope="module")
def server(tok):
    engine = ScriptedEngine(tok.vocab_size, [*tok.encode(" ok"), tok.eos_id], max_seq=64)
    with serving(engine, tok, name="m") as running:
        yield running


def _error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param, error
    return error


CHAT_CASES = [  # (body changes, status, param)
    ({"model": "gpt-4"}, 404, "model"),
    ({"messages": "hi"}, 400, "messages"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ({"max_tokens": "ten"}, 400, "max_tokens"),
    ({"max_tokens": -1}, 400, "max_tokens"),
    ({"max_completion_tokens": 0}, 400, "max_completion_tokens"),
    ({"temperature": 7}, 400, "temperature"),
    ({"temperature": "hot"}, 400, "temperature"),
    ({"top_p": 0}, 400, "top_p"),
    ({"top_k": -5}, 400, "top_k"),
    ({"n": 0}, 400, "n"),
    ({"n": 10**6}, 400, "n"),
    ({"seed": 2**80}, 400, "seed"),
    ({"seed": -1}, 400, "seed"),
    ({"stop": ["a"] * 50}, 400, "stop"),
    ({"logprobs": True, "top_logprobs": 99}, 400, "top_logprobs"),
    ({"top_logprobs": 2}, 400, None),
    ({"presence_penalty": 2.5}, 400, "presence_penalty"),
    ({"repetition_penalty": 0}, 400, "repetition_penalty"),
    ({"stream": "yes"}, 400, "stream"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]},
     400, "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
     400, "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, 400, None),
    ({"tools": [{"type": "retrieval"}]}, 400, None),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, None),
    ({"tool_choice": "required"}, 400, None),
    ({"tool_choice": "sometimes", "tools": [TOOL]}, 400, "tool_choice"),
    ({"reasoning_effort": "extreme"}, 400, "reasoning_effort"),
    ({"chat_template_kwargs": {"thinking": "yes"}}, 400, "chat_template_kwargs.thinking"),
    ({"messages": [{"role": "developer", "content": ""}]}, 422, "messages"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_call_id": "c"}]}, 422, "messages"),
    ({"messages": [{"role": "user", "content": "word " * 100}]}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "x", "task": "dance"}]}, 422, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, None),
]  # fmt: skip


@pytest.mark.parametrize("change,status,param", CHAT_CASES)
def test_bad_chat_requests(server, change, status, param):
    body = {"model": "m", "messages": USER, **change}
    error = _error(httpx.post(f"{server.url}/v1/chat/completions", json=body), status, param)
    if "word " in str(change):  # the prompt is longer than the caches: the limit is named
        assert "64" in error["message"] and "--max-seq" in error["message"]


def test_malformed_bodies_routes_and_sizes(server):
    url = f"{server.url}/v1/chat/completions"
    error = _error(httpx.post(url, content=b"{not json", headers={"content-type":
                   "application/json"}), 400)  # fmt: skip
    assert "JSON" in error["message"]
    _error(httpx.post(url, json=[1, 2]), 400)
    _error(httpx.post(url, content=b'{"model": "m", "messages": [', headers={
        "content-type": "application/json"}), 400)  # fmt: skip
    _error(httpx.post(f"{server.url}/v1/completions", json={"model": "m"}), 400, "prompt")
    long = {"model": "m", "prompt": list(range(65))}  # the caches hold 64
    assert "64" in _error(httpx.post(f"{server.url}/v1/completions", json=long), 400, "prompt")[
        "message"]  # fmt: skip
    _error(httpx.post(f"{server.url}/v1/completions", json={"model": "m", "prompt": [10**9]}),
           400, "prompt")  # fmt: skip
    _error(httpx.post(f"{server.url}/v1/completions", json={"model": "m", "prompt": "x",
                      "echo": True}), 400, "echo")  # fmt: skip
    _error(httpx.get(f"{server.url}/v1/embeddings"), 404)
    _error(httpx.get(url), 405)
    huge = {"model": "m", "messages": [{"role": "user", "content": "x" * (9 << 20)}]}
    _error(httpx.post(url, json=huge), 413)
    with pytest.raises(openai.NotFoundError):
        server.client.models.retrieve("other")


def test_a_wrong_api_key_is_refused(tok):
    engine = ScriptedEngine(tok.vocab_size, [tok.eos_id])
    with serving(engine, tok, name="m", api_key="sesame") as server:
        with pytest.raises(openai.AuthenticationError):
            server.make_client("wrong").chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.AuthenticationError):
            server.make_client("wrong").models.list()
        reply = server.make_client("sesame").chat.completions.create(model="m", messages=USER)
        assert reply.choices[0].finish_reason == "stop"
        assert httpx.get(f"{server.url}/health").status_code == 200  # no key needed


def test_a_full_queue_answers_429_with_retry_after(tok):
    engine = ScriptedEngine(tok.vocab_size, [*tok.encode(" a b c"), tok.eos_id], max_batch=1,
                            delay=0.2)  # fmt: skip
    with serving(engine, tok, name="m", max_waiting=1) as server:
        results: list[object] = []

        def ask() -> None:
            try:
                results.append(server.client.chat.completions.create(model="m", messages=USER))
            except openai.RateLimitError as err:
                results.append(err)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert len(results) == 4 and refused and len(refused) <= 2
        assert refused[0].response.headers["retry-after"] == "1"
        assert refused[0].body["code"] == "queue_full"
        assert server.idle()


def test_a_failed_step_ends_its_requests_and_the_server_goes_on(tok):
    class Failing(ScriptedEngine):
        fail = True

        def forward(self, tokens):
            if self.fail:
                self.fail = False
                raise RuntimeError("the device fell over")
            return super().forward(tokens)

    engine = Failing(tok.vocab_size, [*tok.encode(" ok"), tok.eos_id])
    with serving(engine, tok, name="m") as server:
        first = server.client.chat.completions.create(model="m", messages=USER)
        assert first.choices[0].finish_reason == "abort"
        second = server.client.chat.completions.create(model="m", messages=USER)
        assert (second.choices[0].message.content, second.choices[0].finish_reason) == (
            " ok", "stop")  # fmt: skip
        assert server.idle() and server.scheduler.rows.count(None) == len(server.scheduler.rows)


def test_a_whole_response_whose_client_left_is_cancelled(tok):
    engine = ScriptedEngine(tok.vocab_size, tok.encode(" a" * 400), max_batch=1, delay=0.02)
    with serving(engine, tok, name="m") as server:
        body = {"model": "m", "messages": USER, "max_tokens": 300}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=0.5)
        assert server.idle(timeout=5), "the request of a client that left still runs"
        assert sum(engine.steps_of) < 250  # it was stopped, not run to its end
