"""`v4c run --prompt ...` and `v4c chat`: generation with streamed tokens."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from v4c.cli.options import (
    Backend,
    Checkpoint,
    CudaGraphs,
    Device,
    DraftTokens,
    MaxNew,
    MaxSeq,
    Numerics,
    PlanDir,
    Seed,
    SpecOpt,
    Speculative,
    Temperature,
    Threads,
    TopK,
    TopP,
)
from v4c.cli.ranks import (
    Ep,
    Tp,
    join_ranks,
    only_rank0_speaks,
    resolve_grid,
    run_spec,
    start_ranks,
)
from v4c.cli.setup import cli_drafter, open_cli_session
from v4c.errors import V4CError


@dataclass
class Reply:
    tokens: list[int]  # the new ids, a stop id included as the last one
    complete: bool  # False: Ctrl-C stopped it; the engine's caches are then not to be trusted


def _reply(
    session,
    max_seq: int,
    prompt_ids: list[int],
    max_new: int,
    sampler,
    held: int = 0,
    stream: bool = True,
    drafter=None,
) -> Reply:
    """Generate after `prompt_ids`, streaming text to stdout (unless `stream` is off).
    `held`: the tokens the engine's
    sequence holds already (a chat's earlier turns), which the prompt is appended to. A
    prompt that does not fit in `max_seq` is refused before anything is generated, and a
    reply that reaches the limit stops there (stop reason max_seq)."""
    from v4c.limits import check_fits, new_token_budget
    from v4c.runtime.generate import generate
    from v4c.runtime.tokenizer import StreamDecoder

    check_fits(held, len(prompt_ids), max_seq, max_new)
    budget, by_limit = new_token_budget(held, len(prompt_ids), max_seq, max_new)
    decoder = StreamDecoder(session.tokenizer, skip_special_tokens=True)
    streamed: list[int] = []

    def show(_: int, token: int) -> None:
        streamed.append(token)
        if stream:
            sys.stdout.write(decoder.push(token))
            sys.stdout.flush()

    try:
        result = generate(session.engine, [prompt_ids], sampler, max_new_tokens=budget,
                          stop_ids={session.tokenizer.eos_id}, on_token=show,
                          reset=not held, drafter=drafter)  # fmt: skip
    except KeyboardInterrupt:
        if stream:
            sys.stdout.write(decoder.flush() + "\n")
        typer.echo(f"[interrupted after {_count(len(streamed), 'new token')}]", err=True)
        return Reply(streamed, complete=False)
    if stream:
        sys.stdout.write(decoder.flush() + "\n")
    reason = result.stop_reasons[0]
    if reason == "length" and by_limit:
        reason = "max_seq"
    decode = (
        f"decode {result.tokens_per_s:.1f} tokens/s"
        if result.decode_tokens
        else "no decode step (the one token came from the prefill)"
    )
    spec = result.speculation
    if spec is not None and spec.rounds:
        decode += (
            f", {spec.acceptance:.0%} of {spec.drafted} drafts accepted, "
            f"{spec.tokens_per_step:.2f} tokens per main-model step"
        )
        if spec.stopped:
            decode += f"; speculation {spec.stopped}"
    typer.echo(
        f"[{_count(result.prompt_tokens[0], 'prompt token')}, {result.generated_tokens[0]} new "
        f"({reason}); prefill {result.prefill_s:.2f} s, {decode}]",
        err=True,
    )
    return Reply(result.tokens[0], complete=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _parsed(session, prompt: str, reply: list[int]) -> dict:
    """The reply as the assistant message it encodes (reasoning, content, tool calls)."""
    from v4c.runtime.chat.parse import parse_reply, starts_in_reasoning

    text = session.tokenizer.decode(reply)
    message, problem = parse_reply(text, thinking=starts_in_reasoning(prompt))
    if problem:
        typer.echo(f"[the reply is not in the chat format ({problem}); kept as read]", err=True)
    return message


def run_command(
    prompt: Annotated[str | None, typer.Option(help="The prompt (one user message).")] = None,
    messages: Annotated[
        Path | None,
        typer.Option(
            help="A JSON file with the conversation instead: a list of OpenAI-style messages "
            "(system with tools, user, assistant with tool_calls, tool, developer, ...)."
        ),
    ] = None,
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
    plan: PlanDir = None,
    cuda_graphs: CudaGraphs = True,
    speculative: Speculative = None,
    draft_tokens: DraftTokens = 1,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the reply as the parsed message (JSON), not streamed text."
        ),
    ] = False,
    tp: Tp = None,
    ep: Ep = None,
) -> None:
    """Generate a reply to one prompt, streaming tokens; prints tokens/s at the end. With
    --tp/--ep (or under torchrun) every rank runs its piece of the model (v4c.cli.ranks)."""
    if (prompt is None) == (messages is None) or (messages is not None and not chat):
        raise V4CError("give --prompt, or --messages FILE (chat encoding only)")
    grid = resolve_grid(tp, ep, spec, plan)
    kwargs = {k: v for k, v in locals().items() if k != "grid"}
    if start_ranks(grid, _run_rank, kwargs, run_spec(spec, checkpoint, plan)):
        return
    from v4c.runtime.chat.messages import read_messages

    conversation = read_messages(messages) if messages else [{"role": "user", "content": prompt}]
    comm = join_ranks(grid, device)
    with only_rank0_speaks(comm):
        session, limit = open_cli_session(
            checkpoint, spec, device, numerics, backend, max_seq, threads, plan, cuda_graphs,
            comm=comm,
        )  # fmt: skip
        from v4c.runtime.chat.encode import encode_chat
        from v4c.runtime.sampler import Sampler

        sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        if comm is not None:
            from v4c.runtime.distributed import BroadcastSampler

            sampler = BroadcastSampler(sampler, comm)
        drafter = cli_drafter(session, speculative, draft_tokens, sampler, comm)
        tok = session.tokenizer
        if chat:
            text = encode_chat(conversation, thinking=thinking)
            ids = tok.encode(text)
        else:
            text, ids = prompt, [tok.bos_id, *tok.encode(prompt)]
        reply = _reply(
            session, limit, ids, max_new_tokens, sampler, stream=not json_out, drafter=drafter
        )
        if json_out:
            typer.echo(json.dumps(_parsed(session, text, reply.tokens), ensure_ascii=False))


def _run_rank(kwargs: dict) -> None:
    """One rank of `v4c run --tp/--ep` started on this machine (`start_ranks`)."""
    run_command(**kwargs)


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
    plan: PlanDir = None,
    cuda_graphs: CudaGraphs = True,
    speculative: Speculative = None,
    draft_tokens: DraftTokens = 1,
) -> None:
    """An interactive chat: one user message a line; an empty line, EOF or Ctrl-C at the
    prompt ends it, Ctrl-C during a reply stops that reply. The reply is kept as the message
    it parses to, so the history is the official one; a turn feeds the engine only the
    tokens added where that history extends what the engine holds (not in thinking mode,
    where the earlier reasoning is dropped from the history)."""
    from v4c.runtime.launch import place_from_env

    if place_from_env() is not None:
        raise V4CError("v4c chat runs in one process; for several ranks use v4c run --tp/--ep")
    session, limit = open_cli_session(
        checkpoint, spec, device, numerics, backend, max_seq, threads, plan, cuda_graphs
    )
    from v4c.runtime.chat.encode import encode_chat
    from v4c.runtime.sampler import Sampler

    sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    drafter = cli_drafter(session, speculative, draft_tokens, sampler)
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
        prompt = encode_chat(messages, thinking=thinking)
        ids = session.tokenizer.encode(prompt)
        if ids[: len(fed)] != fed:  # the rendering of earlier turns changed: start again
            session.engine.reset(1)
            fed = []
        reply = _reply(
            session, limit, ids[len(fed) :], max_new_tokens, sampler, held=len(fed),
            drafter=drafter,
        )  # fmt: skip
        # the last new token was sampled, not fed; after Ctrl-C the caches may hold part of
        # a step, so the next turn feeds the whole conversation again
        fed = ids + reply.tokens[:-1] if reply.complete else []
        messages.append(_parsed(session, prompt, reply.tokens))
