"""`v4c run --prompt ...` and `v4c chat`: generation with streamed tokens."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from v4c.cli.experts import RecordExperts, save_profile
from v4c.cli.model import Model, place_model
from v4c.cli.options import (
    Backend,
    Checkpoint,
    CudaGraphs,
    Device,
    DraftTokens,
    FrequencyPenalty,
    MaxNew,
    MaxSeq,
    Numerics,
    PlanDir,
    PresencePenalty,
    RandomWeights,
    RepetitionPenalty,
    Seed,
    SpecOpt,
    Speculative,
    Stop,
    Temperature,
    Threads,
    TopK,
    TopP,
    read_stdin,
    utf8,
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
from v4c.cli.progress import PrefillBar
from v4c.cli.setup import cli_drafter, log, open_cli_session
from v4c.errors import V4CError


@dataclass
class Reply:
    tokens: list[int]  # the new ids, a stop id included as the last one
    complete: bool  # False: the engine's caches may hold more than the reply (refeed)
    interrupted: bool = False  # Ctrl-C stopped it


def _reply(
    session,
    max_seq: int,
    prompt_ids: list[int],
    max_new: int,
    sampler,
    held: int = 0,
    stream: bool = True,
    drafter=None,
    penalties=None,
    stops: list[str] | None = None,
) -> Reply:
    """Generate after `prompt_ids`, streaming text to stdout (unless `stream` is off).
    `held`: the tokens the engine's
    sequence holds already (a chat's earlier turns), which the prompt is appended to. A
    prompt that does not fit in `max_seq` is refused before anything is generated, and a
    reply that reaches the limit stops there (stop reason max_seq)."""
    from v4c.limits import check_fits, check_vocab, new_token_budget
    from v4c.runtime.generate import generate
    from v4c.runtime.penalties import StopText
    from v4c.runtime.tokenizer import StreamDecoder

    check_vocab(prompt_ids, session.spec.vocab_size)
    check_fits(held, len(prompt_ids), max_seq, max_new)
    budget, by_limit = new_token_budget(held, len(prompt_ids), max_seq, max_new)
    step = getattr(session.engine, "max_tokens", 0)
    if step and len(prompt_ids) > step:  # a long prefill: say it before the wait
        steps = -(-len(prompt_ids) // step)
        typer.echo(
            f"[prefill: {len(prompt_ids)} tokens in {steps} steps of up to {step}]", err=True
        )
    bar = PrefillBar(session.engine, len(prompt_ids))
    decoder = StreamDecoder(session.tokenizer, skip_special_tokens=True)
    text = StopText(stops or [])
    streamed: list[int] = []
    times = [time.perf_counter()]  # the start, then when each token came

    def show(_: int, token: int) -> None:
        bar.close()
        streamed.append(token)
        times.append(time.perf_counter())
        shown = text.push(decoder.push(token))
        if stream:
            sys.stdout.write(shown)
            sys.stdout.flush()
        if text.stopped:
            raise _StopString

    def end() -> None:
        if stream:
            sys.stdout.write(text.push(decoder.flush()) + text.flush() + "\n")
            sys.stdout.flush()

    try:
        with bar:
            result = generate(session.engine, [prompt_ids], sampler, max_new_tokens=budget,
                              stop_ids={session.tokenizer.eos_id}, on_token=show,
                              reset=not held, drafter=drafter, penalties=penalties)  # fmt: skip
    except (KeyboardInterrupt, _StopString) as stopped:
        stop = isinstance(stopped, _StopString)
        end()
        # the figures so far, from when the tokens came (the first one ends the prefill)
        prefill_s = times[1] - times[0] if len(times) > 1 else times[-1] - times[0]
        decode_s = times[-1] - times[1] if len(times) > 2 else 0.0
        decode = len(streamed) - 1
        rate = decode / decode_s if decode_s > 0 else 0.0
        _say(len(prompt_ids), len(streamed), "stop" if stop else "interrupted", prefill_s,
             decode, rate)  # fmt: skip
        # a stop string ends the reply as a stop id does (the engine holds all but the
        # last token), except with a drafter, whose caches may hold more
        return Reply(streamed, complete=stop and drafter is None, interrupted=not stop)
    end()
    reason = result.stop_reasons[0]
    if reason == "length" and by_limit:
        reason = "max_seq"
    _say(result.prompt_tokens[0], result.generated_tokens[0], reason, result.prefill_s,
         result.decode_tokens, result.tokens_per_s, result.speculation)  # fmt: skip
    return Reply(result.tokens[0], complete=True)


class _StopString(Exception):
    """Raised from the token callback to end generation at a stop string."""


def _say(prompt: int, new: int, reason: str, prefill_s: float, decode: int, rate: float,
         speculation=None) -> None:  # fmt: skip
    """The line after a reply: its tokens, why it stopped, and the speed of each phase."""
    if decode > 0:
        speed = f"decode {rate:.1f} tokens/s"
    elif new:
        speed = "no decode step (the one token came from the prefill)"
    else:
        speed = "no token yet"
    if speculation is not None and speculation.rounds:
        speed += (
            f", {speculation.acceptance:.0%} of {speculation.drafted} drafts accepted, "
            f"{speculation.tokens_per_step:.2f} tokens per main-model step"
        )
        if speculation.stopped:
            speed += f"; speculation {speculation.stopped}"
    typer.echo(
        f"[{_count(prompt, 'prompt token')}, {new} new ({reason}); prefill {prefill_s:.2f} s, "
        f"{speed}]",
        err=True,
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _parsed(session, prompt: str, reply: list[int], stops: list[str] | None = None) -> dict:
    """The reply as the assistant message it encodes (reasoning, content, tool calls), up
    to the first of `stops`."""
    from v4c.runtime.chat.parse import parse_reply, starts_in_reasoning
    from v4c.runtime.penalties import cut_at_stop

    text, _ = cut_at_stop(session.tokenizer.decode(reply), stops or [])
    message, problem = parse_reply(text, thinking=starts_in_reasoning(prompt))
    if problem:
        typer.echo(f"[the reply is not in the chat format ({problem}); kept as read]", err=True)
    return message


def run_command(
    model: Model = None,
    prompt: Annotated[
        str | None, typer.Option(help="The prompt (one user message); -: read it from stdin.")
    ] = None,
    prompt_file: Annotated[
        Path | None,
        typer.Option(
            help="Many prompts, run as one batch, the results as JSON lines: one prompt a "
            "line, or (*.jsonl) a JSON string, list of messages, or object with prompt or "
            "messages a line; -: read from stdin."
        ),
    ] = None,
    messages: Annotated[
        Path | None,
        typer.Option(
            help="A JSON file with the conversation instead: a list of OpenAI-style messages "
            "(system with tools, user, assistant with tool_calls, tool, developer, ...)."
        ),
    ] = None,
    checkpoint: Checkpoint = None,
    spec: SpecOpt = None,
    random_weights: RandomWeights = False,
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
    stop: Stop = None,
    repetition_penalty: RepetitionPenalty = 1.0,
    frequency_penalty: FrequencyPenalty = 0.0,
    presence_penalty: PresencePenalty = 0.0,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the reply as the parsed message (JSON), not streamed text."
        ),
    ] = False,
    tp: Tp = None,
    ep: Ep = None,
    record_experts: RecordExperts = None,
) -> None:
    """Generate a reply to a prompt, streaming tokens; prints tokens/s at the end
    (--prompt-file: many prompts as one batch, JSON lines out).

    With --tp/--ep (or under torchrun) every rank runs its piece of the model.
    """
    checkpoint, spec = place_model(model, checkpoint, spec, plan, random_weights)
    model = None  # placed: a rank started from these arguments must not place it again
    prompt = _one_source(prompt, messages, prompt_file, chat)
    grid = resolve_grid(tp, ep, spec, plan)
    if str(prompt_file) == "-" and grid.world > 1:
        raise V4CError("--prompt-file -: the ranks cannot share standard input; give a file")
    kwargs = {k: v for k, v in locals().items() if k != "grid"}
    if start_ranks(grid, _run_rank, kwargs, run_spec(spec, checkpoint, plan)):
        return
    from v4c.runtime.chat.messages import read_messages

    conversation = read_messages(messages) if messages else [{"role": "user", "content": prompt}]
    items = None
    if prompt_file is not None:
        from v4c.cli.batch import read_prompt_file

        items = read_prompt_file(prompt_file)
    comm = join_ranks(grid, device)
    with only_rank0_speaks(comm):
        session, limit = open_cli_session(
            checkpoint, spec, device, numerics, backend, max_seq, threads, plan, cuda_graphs,
            comm=comm, max_batch=len(items) if items else 1, random_weights=random_weights,
        )  # fmt: skip
        from v4c.runtime.chat.encode import encode_chat
        from v4c.runtime.sampler import Sampler

        sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        if comm is not None:
            from v4c.runtime.distributed import BroadcastSampler

            sampler = BroadcastSampler(sampler, comm)
        from v4c.runtime.penalties import Penalties

        penalties = Penalties(repetition_penalty, frequency_penalty, presence_penalty)
        for text in stop or []:
            utf8(text, "--stop")
        drafter = choose_drafter(session, speculative, draft_tokens, sampler, comm, penalties)
        picks = session.engine.record_experts() if record_experts else None
        if items is not None:
            from v4c.cli.batch import run_batch

            run_batch(session, limit, items, chat=chat, thinking=thinking,
                      max_new=max_new_tokens, sampler=sampler, drafter=drafter,
                      penalties=penalties, stops=stop or [])  # fmt: skip
            if picks is not None:
                save_profile(record_experts, session.spec.name, picks)
            return
        tok = session.tokenizer
        if chat:
            text = encode_chat(conversation, thinking=thinking)
            ids = tok.encode(text)
        else:
            text, ids = prompt, [tok.bos_id, *tok.encode(prompt)]
        reply = _reply(
            session, limit, ids, max_new_tokens, sampler, stream=not json_out, drafter=drafter,
            penalties=penalties, stops=stop,
        )  # fmt: skip
        if json_out:
            message = _parsed(session, text, reply.tokens, stop)
            typer.echo(json.dumps(message, ensure_ascii=False))
        if picks is not None:
            save_profile(record_experts, session.spec.name, picks)
        if reply.interrupted:  # Ctrl-C: what came is printed; the shell's code for it
            raise typer.Exit(130)


def choose_drafter(session, speculative, draft_tokens: int, sampler, comm, penalties):
    """`cli_drafter`'s choice, except that penalties turn speculation off: they change the
    logits of each token, which the verify step samples without them."""
    if penalties.active:
        if speculative == "mtp":
            raise V4CError("--speculative mtp: not with the penalties (use --speculative off)")
        log("speculative off (the penalties apply to every main-model step)")
        return None
    return cli_drafter(session, speculative, draft_tokens, sampler, comm)


def _one_source(prompt, messages, prompt_file, chat: bool) -> str | None:
    """The prompt (read from stdin for `-`) after checking that exactly one of --prompt,
    --messages and --prompt-file is given, and a conversation with the chat encoding."""
    given = [o for o, v in (("--prompt", prompt), ("--messages", messages),
                            ("--prompt-file", prompt_file)) if v is not None]  # fmt: skip
    if len(given) > 1:
        raise V4CError(f"{' and '.join(given)}: give one of them, not both")
    if not given:
        raise V4CError(
            "give the prompt: --prompt TEXT, --messages FILE (a JSON conversation) or "
            "--prompt-file FILE (many prompts)"
        )
    if prompt == "-":
        prompt = read_stdin("--prompt -").strip()
        if not prompt:
            raise V4CError("--prompt -: standard input held no prompt")
    if prompt is not None:
        utf8(prompt, "--prompt")
    if messages is not None and not chat:
        raise V4CError("--messages with --raw: a conversation needs the chat encoding (drop --raw)")
    return prompt


def _run_rank(kwargs: dict) -> None:
    """One rank of `v4c run --tp/--ep` started on this machine (`start_ranks`)."""
    run_command(**kwargs)
