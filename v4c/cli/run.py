"""`v4c run --prompt ...` and `v4c chat`: generation with streamed tokens."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated

import typer

from v4c.cli.options import (
    Backend,
    Checkpoint,
    Device,
    MaxNew,
    MaxSeq,
    Numerics,
    Seed,
    SpecOpt,
    Temperature,
    Threads,
    TopK,
    TopP,
)
from v4c.cli.setup import open_cli_session


@dataclass
class Reply:
    tokens: list[int]  # the new ids, a stop id included as the last one
    complete: bool  # False: Ctrl-C stopped it; the engine's caches are then not to be trusted


def _reply(
    session, max_seq: int, prompt_ids: list[int], max_new: int, sampler, held: int = 0
) -> Reply:
    """Generate after `prompt_ids`, streaming text to stdout. `held`: the tokens the engine's
    sequence holds already (a chat's earlier turns), which the prompt is appended to. A
    prompt that does not fit in `max_seq` is refused before anything is generated, and a
    reply that reaches the limit stops there (stop reason max_seq)."""
    from v4c.limits import check_fits, new_token_budget
    from v4c.runtime.generate import generate
    from v4c.runtime.tokenizer import StreamDecoder

    check_fits(held, len(prompt_ids), max_seq, max_new)
    budget, by_limit = new_token_budget(held, len(prompt_ids), max_seq, max_new)
    stream = StreamDecoder(session.tokenizer, skip_special_tokens=True)
    streamed: list[int] = []

    def show(_: int, token: int) -> None:
        streamed.append(token)
        sys.stdout.write(stream.push(token))
        sys.stdout.flush()

    try:
        result = generate(session.engine, [prompt_ids], sampler, max_new_tokens=budget,
                          stop_ids={session.tokenizer.eos_id}, on_token=show,
                          reset=not held)  # fmt: skip
    except KeyboardInterrupt:
        sys.stdout.write(stream.flush() + "\n")
        typer.echo(f"[interrupted after {_count(len(streamed), 'new token')}]", err=True)
        return Reply(streamed, complete=False)
    sys.stdout.write(stream.flush() + "\n")
    reason = result.stop_reasons[0]
    if reason == "length" and by_limit:
        reason = "max_seq"
    decode = (
        f"decode {result.tokens_per_s:.1f} tokens/s"
        if result.decode_tokens
        else "no decode step (the one token came from the prefill)"
    )
    typer.echo(
        f"[{_count(result.prompt_tokens[0], 'prompt token')}, {result.generated_tokens[0]} new "
        f"({reason}); prefill {result.prefill_s:.2f} s, {decode}]",
        err=True,
    )
    return Reply(result.tokens[0], complete=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def run_command(
    prompt: Annotated[str, typer.Option(help="The prompt.")],
    checkpoint: Checkpoint = None,
    spec: SpecOpt = None,
    chat: Annotated[
        bool, typer.Option("--chat/--raw", help="Chat encoding, or the raw text after BOS.")
    ] = True,
    thinking: Annotated[bool, typer.Option(help="Thinking mode (chat encoding).")] = False,
    max_new_tokens: MaxNew = 64,
    temperature: Temperature = 0.6,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    seed: Seed = None,
    device: Device = None,
    numerics: Numerics = None,
    backend: Backend = "auto",
    max_seq: MaxSeq = None,
    threads: Threads = None,
) -> None:
    """Generate a reply to one prompt, streaming tokens; prints tokens/s at the end."""
    session, limit = open_cli_session(checkpoint, spec, device, numerics, backend, max_seq, threads)
    from v4c.runtime.chat import encode_chat
    from v4c.runtime.sampler import Sampler

    sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    tok = session.tokenizer
    if chat:
        ids = tok.encode(encode_chat([{"role": "user", "content": prompt}], thinking=thinking))
    else:
        ids = [tok.bos_id, *tok.encode(prompt)]
    _reply(session, limit, ids, max_new_tokens, sampler)


def chat_command(
    checkpoint: Checkpoint = None,
    spec: SpecOpt = None,
    thinking: Annotated[bool, typer.Option(help="Thinking mode.")] = False,
    max_new_tokens: MaxNew = 256,
    temperature: Temperature = 0.6,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    seed: Seed = None,
    device: Device = None,
    numerics: Numerics = None,
    backend: Backend = "auto",
    max_seq: MaxSeq = None,
    threads: Threads = None,
) -> None:
    """An interactive chat: one user message a line; an empty line, EOF or Ctrl-C at the
    prompt ends it, Ctrl-C during a reply stops that reply. Each turn feeds the engine only
    the tokens the conversation added."""
    session, limit = open_cli_session(checkpoint, spec, device, numerics, backend, max_seq, threads)
    from v4c.runtime.chat import encode_chat
    from v4c.runtime.sampler import Sampler

    sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    messages: list[dict] = []
    fed: list[int] = []  # the tokens the engine's sequence holds
    session.engine.reset(1)
    while True:
        typer.echo("> ", nl=False, err=True)
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # Ctrl-C at the prompt ends the chat
            line = ""
        if not line.strip():
            break
        messages.append({"role": "user", "content": line.strip()})
        ids = session.tokenizer.encode(encode_chat(messages, thinking=thinking))
        if ids[: len(fed)] != fed:  # the rendering of earlier turns changed: start again
            session.engine.reset(1)
            fed = []
        reply = _reply(session, limit, ids[len(fed) :], max_new_tokens, sampler, held=len(fed))
        # the last new token was sampled, not fed; after Ctrl-C the caches may hold part of
        # a step, so the next turn feeds the whole conversation again
        fed = ids + reply.tokens[:-1] if reply.complete else []
        eos = session.tokenizer.eos_id
        text = session.tokenizer.decode([t for t in reply.tokens if t != eos])
        messages.append({"role": "assistant", "content": text})
