"""The options `v4c run` and `v4c chat` share, each validated where it is parsed.

Why here: a value the sampler or the engine would reject deep inside (a `--top-p 0`, a NaN
temperature, a seed torch cannot hold) must fail as a usage error naming the option, with
the range its `--help` states, before anything is loaded.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from v4c.errors import V4CError


def _real(low: float, high: float | None, *, low_open: bool = False):
    """A click callback: the value is a finite number in the interval, or a usage error."""
    interval = f"{'(' if low_open else '['}{low:g}, {'∞)' if high is None else f'{high:g}]'}"

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and (high is None or value <= high)):
            raise typer.BadParameter(f"must be a number in {interval}, got {value}")
        return value

    return check, interval


_temperature, TEMPERATURE_RANGE = _real(0.0, None)
_top_p, TOP_P_RANGE = _real(0.0, 1.0, low_open=True)

Checkpoint = Annotated[
    Path | None,
    typer.Option(
        help="Checkpoint folder, or a Hugging Face Hub repo id (owner/name: downloaded, or "
        "from the local Hugging Face cache offline). Default: the embedded tiny model."
    ),
]
SpecOpt = Annotated[
    str | None,
    typer.Option(
        "--spec",
        help="A spec (file or shipped name): the checkpoint's config.json is checked against "
        "it; with --random-weights, the model to run.",
    ),
]
Device = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when there is one).")]
MaxNew = Annotated[int, typer.Option(min=1, help="Stop after this many new tokens.")]
MaxSeq = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Longest sequence (prompt, conversation and reply) the caches hold. Default: "
        "8192, or less if the model's positions or the device's free memory allow less.",
    ),
]
Temperature = Annotated[
    float, typer.Option(callback=_temperature, help=f"In {TEMPERATURE_RANGE}; 0: greedy.")
]
TopP = Annotated[
    float,
    typer.Option(callback=_top_p, help=f"Nucleus sampling mass, in {TOP_P_RANGE} (1: off)."),
]
TopK = Annotated[int, typer.Option(min=0, help="Keep the k most likely tokens (0: off).")]


def _seed(value: int | None) -> int | None:
    """A seed torch can hold (below 2**64); the range is checked here rather than by click,
    whose help would print it as a twenty-digit number."""
    if value is not None and not 0 <= value < 2**64:
        raise typer.BadParameter(f"must be a whole number from 0 to 2**64 - 1, got {value}")
    return value


Seed = Annotated[
    int | None,
    typer.Option(callback=_seed, help="Sampling seed (0 to 2**64 - 1), for reproducible output."),
]
Numerics = Annotated[
    str | None, typer.Option(help="official or plain (default: official for official checkpoints).")
]
Backend = Annotated[
    str,
    typer.Option(
        help="torch (reference semantics), triton (generated kernels, needs a CUDA GPU) "
        "or auto: triton on CUDA, else torch."
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="CPU threads for torch. Default: $V4C_THREADS, else one fewer than the cores "
        "this process may use (at least 1): a pool as large as the machine stalls whenever "
        "anything else runs, and decode speed then swings tenfold.",
    ),
]
PlanDir = Annotated[
    Path | None,
    typer.Option("--plan", help="Run the plan `v4c compile` wrote into this folder, as it is."),
]
CudaGraphs = Annotated[
    bool,
    typer.Option(
        "--cuda-graphs/--no-cuda-graphs", help="Replay each decode step from a CUDA graph (CUDA)."
    ),
]


def _speculative(value: str | None) -> str | None:
    if value not in (None, "auto", "off", "mtp"):
        raise typer.BadParameter(f"expected auto, mtp or off, got {value!r}")
    return value


Speculative = Annotated[
    str | None,
    typer.Option(
        callback=_speculative,
        help="auto (default where the plan has the MTP block's draft entry point): draft "
        "tokens with the MTP block, verify them in one main-model step, and stop once that is "
        "slower than plain decoding (measured on the run, said in the summary); mtp: "
        "speculate to the end; off: never. Greedy decoding gives the same tokens in every "
        "mode, sampling the same distribution.",
    ),
]
DraftTokens = Annotated[
    int,
    typer.Option(
        min=1,
        help="Draft tokens per verify step when speculating (1..the plan's "
        "--max-draft; more than one chains the MTP block on its own output).",
    ),
]


_repetition, REPETITION_RANGE = _real(0.0, None, low_open=True)
_penalty, PENALTY_RANGE = _real(-2.0, 2.0)

Stop = Annotated[
    list[str] | None,
    typer.Option(
        "--stop", help="End the reply where this text first appears (repeatable); the reply "
        "is the text before it.",
    ),
]  # fmt: skip
RepetitionPenalty = Annotated[
    float,
    typer.Option(
        callback=_repetition,
        help=f"In {REPETITION_RANGE}: divide the positive logits of tokens already in the "
        "sequence (prompt and reply) by it, multiply the negative ones (1: off).",
    ),
]
FrequencyPenalty = Annotated[
    float,
    typer.Option(
        callback=_penalty,
        help=f"In {PENALTY_RANGE}: subtract it times the times a token is in the reply.",
    ),
]
PresencePenalty = Annotated[
    float,
    typer.Option(
        callback=_penalty, help=f"In {PENALTY_RANGE}: subtract it once a token is in the reply."
    ),
]


def utf8(text: str, what: str) -> str:
    """`text` if it is UTF-8 text; bytes that are not (read from a pipe or the command
    line, kept by Python as lone surrogates) would fail deep in the tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise V4CError(f"{what}: not UTF-8 text (byte {err.start} of it)") from None
    return text


def read_stdin(what: str) -> str:
    """All of standard input as UTF-8 text, or a V4CError naming `what`."""
    try:
        return utf8(sys.stdin.read(), what)
    except UnicodeDecodeError as err:
        raise V4CError(f"{what}: standard input is not UTF-8 text ({err.reason})") from None


RandomWeights = Annotated[
    bool,
    typer.Option(
        "--random-weights",
        help="Run the spec given as MODEL or --spec (or the plan of --plan) with random "
        "weights in its stored formats, made once in the cache: a spec one wrote runs "
        "without a checkpoint.",
    ),
]
