"""The serving scheduler on a scripted engine, stepped by hand: chunked prefill never stalls
a running decode and cuts a prompt the same way whatever runs beside it; a cancelled
request frees its row at the next step; stop() ends everything in flight with "abort";
stop strings and stop ids end a request with the text before them."""

from __future__ import annotations

from tests.serve.scripted import ScriptedEngine
from v4c.runtime.scheduler import Request, SamplingParams, Scheduler


class Recorder(ScriptedEngine):
    """Also keeps what each step fed each row."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: list[dict[int, list[int]]] = []

    def forward(self, tokens):
        self.steps.append({row: list(ids) for row, ids in enumerate(tokens) if ids})
        return super().forward(tokens)


def _request(prompt, outs, **params) -> Request:
    return Request(list(prompt), SamplingParams(**params), outs.append)


def test_chunked_prefill_does_not_stall_decodes(tok):
    engine = Recorder(tok.vocab_size, [*tok.encode(" a b c d e f g h i j"), tok.eos_id],
                      max_batch=2)  # fmt: skip
    scheduler = Scheduler(engine, tok, prefill_chunk=4)
    short, long_, outs = list(range(10, 13)), list(range(100, 118)), []
    scheduler.submit([_request(short, outs, max_new_tokens=9)])
    scheduler.step()  # the short prompt in one chunk: its first token
    scheduler.submit([_request(long_, outs, max_new_tokens=2)])
    while scheduler.step():
        pass
    joined = [step for step in engine.steps if 1 in step]
    chunks = [step[1] for step in joined]
    assert chunks[:5] == [long_[i : i + 4] for i in range(0, 18, 4)]  # 4, 4, 4, 4, 2
    assert all(len(step[0]) == 1 for step in joined[:5])  # row 0 decoded at every one
    assert sum(len(o.tokens) for o in outs) == 9 + 2 and scheduler.running == 0


def test_cancel_frees_the_row_and_stop_aborts_everything(tok):
    engine = ScriptedEngine(tok.vocab_size, tok.encode(" a" * 50), max_batch=1)
    scheduler = Scheduler(engine, tok)
    outs_a, outs_b = [], []
    a, b = _request([5, 6], outs_a, max_new_tokens=40), _request([7, 8], outs_b)
    scheduler.submit([a, b])
    scheduler.step()
    assert scheduler.rows == [a] and list(scheduler.waiting) == [b]
    scheduler.cancel(a)
    scheduler.step()  # a leaves, b takes its row in the same step
    assert outs_a[-1].finish == "abort" and scheduler.rows == [b]
    scheduler.stop()
    assert outs_b[-1].finish == "abort" and scheduler.rows == [None]


def test_stop_strings_and_ids_end_with_the_text_before_them(tok):
    text = "ab 🦜 cd 🦜 ef"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # the parrot is several tokens (bytes of one char)
    for stop, want, why in [
        (("🦜 c",), "ab ", "stop"),
        (("d",), "ab 🦜 c", "stop"),
        (("zz",), text, "stop"),  # the script's EOS
    ]:
        engine = ScriptedEngine(tok.vocab_size, [*ids, tok.eos_id], max_batch=1)
        scheduler = Scheduler(engine, tok)
        outs = []
        request = _request([3, 4], outs, max_new_tokens=64, stop=stop,
                           stop_ids=frozenset({tok.eos_id}))  # fmt: skip
        scheduler.submit([request])
        while scheduler.step():
            pass
        assert "".join(o.text for o in outs) == want and outs[-1].finish == why
        assert all("\ufffd" not in o.text for o in outs)  # never half a character


def test_length_and_the_caches_end(tok):
    engine = ScriptedEngine(tok.vocab_size, tok.encode(" a" * 50), max_batch=1, max_seq=8)
    scheduler = Scheduler(engine, tok)
    outs = []
    scheduler.submit([_request([1, 2, 3, 4, 5], outs, max_new_tokens=100)])
    while scheduler.step():
        pass
    # 5 prompt tokens + n new, the last not fed: the caches hold 5 + n - 1 <= 8
    assert sum(len(o.tokens) for o in outs) == 4 and outs[-1].finish == "length"


def test_speculative_rows_emit_the_plain_greedy_tokens(tok):
    """The tiny model with random weights and its MTP block, K = 2: greedy requests decoded
    by verify rounds beside a sampled one (which decodes plainly) emit exactly what plain
    decoding emits; their prompts are prefilled in chunks, as a server does."""
    import torch

    from v4c.compile import compile_spec
    from v4c.passes.base import CompileOptions
    from v4c.runtime.checkpoint.random_weights import random_weights
    from v4c.runtime.engine import Engine
    from v4c.runtime.rowdraft import RowDrafter
    from v4c.spec import load_spec

    spec = load_spec("tiny")
    options = CompileOptions(max_batch=3, max_tokens=16, max_seq=64, weights="bf16",
                             dtype="fp32", max_draft=2)  # fmt: skip
    engine = Engine(compile_spec(spec, options).plan, random_weights(spec, seed=1),
                    dtype=torch.float32)  # fmt: skip
    prompts = [list(range(100, 120)), list(range(300, 305)), list(range(500, 512))]

    def run(drafter) -> list[list[int]]:
        scheduler = Scheduler(engine, tok, prefill_chunk=16, drafter=drafter)
        outs = [[] for _ in prompts]
        temperatures = [0.0, 0.0, 0.8]
        scheduler.submit([
            Request(p, SamplingParams(max_new_tokens=10, temperature=t, seed=3), o.append)
            for p, t, o in zip(prompts, temperatures, outs)
        ])  # fmt: skip
        while scheduler.step():
            pass
        return [[t for o in out for t in o.tokens] for out in outs]

    plain = run(None)
    drafter = RowDrafter(engine, draft_tokens=2)
    assert run(drafter) == plain
    stats = drafter.stats
    assert stats.rounds > 0 and stats.drafted > 0 and stats.emitted >= stats.rounds
    assert all(len(tokens) == 10 for tokens in plain)
