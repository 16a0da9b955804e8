"""Every endpoint of `v4c serve` on the tiny model, through the real `openai` client, whole
and streamed: a stream must say exactly what the whole response says (greedy, so both are
the same tokens), with OpenAI's chunk order (role first, deltas, the finish chunk, usage,
[DONE]); usage counts the tokens; stop strings cut the text; n and seed choose choices."""

from __future__ import annotations

import httpx

CHAT = [{"role": "user", "content": "Name three colours."}]


def test_models_health_and_metrics(tiny_server):
    models = tiny_server.client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert httpx.get(f"{tiny_server.url}/health").json() == {"status": "ok"}
    tiny_server.client.completions.create(model="tiny", prompt="Hi", max_tokens=2)
    text = httpx.get(f"{tiny_server.url}/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines["v4c:num_requests_running"] == "0"
    assert lines["v4c:cache_rows"] == "32"
    assert int(lines["v4c:scheduler_steps_total"]) >= 2  # a prefill and a decode step
    assert int(lines['v4c:request_success_total{finished_reason="length"}']) >= 1
    assert int(lines["v4c:generation_tokens_total"]) >= 2
    assert int(lines["v4c:time_to_first_token_seconds_count"]) >= 1


def test_chat_whole_and_streamed_agree(tiny_server):
    client = tiny_server.client
    whole = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
    )
    choice = whole.choices[0]
    assert choice.finish_reason == "length" and whole.usage.completion_tokens == 6
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 6
    assert len(choice.logprobs.content) == 6
    for entry in choice.logprobs.content:  # greedy: the chosen token is the most likely
        assert entry.logprob == entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob

    chunks = list(client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions_whole_streamed_stop_and_choices(tiny_server):
    client = tiny_server.client
    whole = client.completions.create(model="tiny", prompt="The sky is", max_tokens=8,
                                      temperature=0, logprobs=1)  # fmt: skip
    text = whole.choices[0].text
    assert whole.usage.completion_tokens == 8 and len(whole.choices[0].logprobs.tokens) == 8
    assert "".join(whole.choices[0].logprobs.tokens) == text
    streamed = client.completions.create(model="tiny", prompt="The sky is", max_tokens=8,
                                         temperature=0, stream=True)  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed) == text

    stop = text[len(text) // 2 : len(text) // 2 + 2]  # a stop string inside the reply
    cut = client.completions.create(model="tiny", prompt="The sky is", max_tokens=8,
                                    temperature=0, stop=[stop])  # fmt: skip
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]

    sampled = [
        client.completions.create(
            model="tiny",
            prompt="The sky is",
            max_tokens=4,
            temperature=1.0,
            top_p=0.9,
            seed=7,
            n=2,
            extra_body={"top_k": 50},
        )  # fmt: skip
        for _ in range(2)
    ]
    assert [c.text for c in sampled[0].choices] == [c.text for c in sampled[1].choices]
    assert sampled[0].choices[0].text != sampled[0].choices[1].text  # seed, seed + 1
    assert sampled[0].usage.completion_tokens == 8


def test_penalties_give_the_reply_generate_gives_with_them(tiny_server, tok):
    """presence, frequency and repetition penalties in a request: the greedy reply is the
    one `generate` gives with the same `Penalties` on the same model (a second engine of
    the fixture's spec and weights; the plan is batch-invariant, so a server row gives a
    lone sequence's tokens), and it is not the unpenalised reply."""
    import torch

    from v4c.compile import compile_spec
    from v4c.passes.base import CompileOptions
    from v4c.runtime.checkpoint.random_weights import random_weights
    from v4c.runtime.engine import Engine
    from v4c.runtime.generate import generate
    from v4c.runtime.penalties import Penalties
    from v4c.runtime.sampler import Sampler
    from v4c.spec import load_spec

    spec = load_spec("tiny")
    options = CompileOptions(max_batch=1, max_tokens=64, max_seq=256, weights="bf16",
                             dtype="fp32", max_draft=0)  # fmt: skip
    engine = Engine(compile_spec(spec, options).plan, random_weights(spec, seed=0),
                    dtype=torch.float32)  # fmt: skip
    prompt = "The sky is"
    ids = [tok.bos_id, *tok.encode(prompt)]
    texts = {}
    for penalties in (Penalties(), Penalties(0.2, -2.0, -2.0)):  # the latter favours repeats
        alone = generate(engine, [ids], Sampler(), max_new_tokens=12, stop_ids={tok.eos_id},
                         penalties=penalties)  # fmt: skip
        served = tiny_server.client.completions.create(
            model="tiny", prompt=prompt, max_tokens=12, temperature=0,
            presence_penalty=penalties.presence, frequency_penalty=penalties.frequency,
            extra_body={"repetition_penalty": penalties.repetition},
        )  # fmt: skip
        texts[penalties] = served.choices[0].text
        assert texts[penalties] == tok.decode(alone.tokens[0], skip_special_tokens=True)
    assert len(set(texts.values())) == 2, texts
