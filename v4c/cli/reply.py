"""One reply of `v4c run` or a `v4c chat` turn: generated after the prompt, streamed to
stdout as text (the stop strings held back until they cannot match), summed up on stderr
in one line (tokens, why it stopped, the speed of each phase), and read back as the
assistant message it encodes.

Why apart from the commands: `run`, `run --prompt-file` and `chat` each end a reply the
same way, and Ctrl-C or a stop string must leave the same figures and the same state.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import typer

from v4c.cli.progress import PrefillBar


@dataclass
class Reply:
    tokens: list[int]  # the new ids, a stop id included as the last one
    complete: bool  # False: the engine's caches may hold more than the reply (refeed)
    interrupted: bool = False  # Ctrl-C stopped it


def reply(
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
    """Generate after `prompt_ids`, streaming text to stdout (unless `stream` is off); a
    prefill of more than one step is said first and, on a terminal, shown as a bar. `held`:
    the tokens the engine's sequence holds already (a chat's earlier turns), which the
    prompt is appended to. A prompt that does not fit in `max_seq` is refused before
    anything is generated, and a reply that reaches the limit stops there (stop reason
    max_seq)."""
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
            raise StopString

    def end() -> None:
        if stream:
            sys.stdout.write(text.push(decoder.flush()) + text.flush() + "\n")
            sys.stdout.flush()

    try:
        with bar:
            result = generate(session.engine, [prompt_ids], sampler, max_new_tokens=budget,
                              stop_ids={session.tokenizer.eos_id}, on_token=show,
                              reset=not held, drafter=drafter, penalties=penalties)  # fmt: skip
    except (KeyboardInterrupt, StopString) as stopped:
        stop = isinstance(stopped, StopString)
        end()
        # the figures so far, from when the tokens came (the first one ends the prefill)
        prefill_s = times[1] - times[0] if len(times) > 1 else times[-1] - times[0]
        decode_s = times[-1] - times[1] if len(times) > 2 else 0.0
        decode = len(streamed) - 1
        rate = decode / decode_s if decode_s > 0 else 0.0
        say_summary(len(prompt_ids), len(streamed), "stop" if stop else "interrupted", prefill_s,
             decode, rate)  # fmt: skip
        # a stop string ends the reply as a stop id does (the engine holds all but the
        # last token), except with a drafter, whose caches may hold more
        return Reply(streamed, complete=stop and drafter is None, interrupted=not stop)
    end()
    reason = result.stop_reasons[0]
    if reason == "length" and by_limit:
        reason = "max_seq"
    say_summary(result.prompt_tokens[0], result.generated_tokens[0], reason, result.prefill_s,
         result.decode_tokens, result.tokens_per_s, result.speculation)  # fmt: skip
    return Reply(result.tokens[0], complete=True)


class StopString(Exception):
    """Raised from the token callback to end generation at a stop string."""


def say_summary(prompt: int, new: int, reason: str, prefill_s: float, decode: int, rate: float,
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
        f"[{count(prompt, 'prompt token')}, {new} new ({reason}); prefill {prefill_s:.2f} s, "
        f"{speed}]",
        err=True,
    )


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def parsed(session, prompt: str, reply: list[int], stops: list[str] | None = None) -> dict:
    """The reply as the assistant message it encodes (reasoning, content, tool calls), up
    to the first of `stops`."""
    from v4c.runtime.chat.parse import parse_reply, starts_in_reasoning
    from v4c.runtime.penalties import cut_at_stop

    text, _ = cut_at_stop(session.tokenizer.decode(reply), stops or [])
    message, problem = parse_reply(text, thinking=starts_in_reasoning(prompt))
    if problem:
        typer.echo(f"[the reply is not in the chat format ({problem}); kept as read]", err=True)
    return message
