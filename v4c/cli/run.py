"""`v4c run --prompt ...` and `v4c chat`: generation with streamed tokens."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from v4c.errors import V4CError

Checkpoint = Annotated[
    Path | None, typer.Option(help="Checkpoint folder (default: the embedded tiny model).")
]
SpecOpt = Annotated[
    str | None, typer.Option("--spec", help="Spec to check the checkpoint's config.json against.")
]
Device = Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when there is one).")]
MaxNew = Annotated[int, typer.Option(min=1, help="Stop after this many new tokens.")]
Temperature = Annotated[float, typer.Option(min=0.0, help="0: greedy.")]
TopP = Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass (1: off).")]
TopK = Annotated[int, typer.Option(min=0, help="Keep the k most likely tokens (0: off).")]
Seed = Annotated[int | None, typer.Option(help="Sampling seed, for reproducible output.")]
Numerics = Annotated[
    str | None, typer.Option(help="official or plain (default: official for official checkpoints).")
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
Backend = Annotated[
    str,
    typer.Option(
        help="torch (reference semantics), triton (generated kernels) "
        "or auto: triton on CUDA with plain numerics."
    ),
]


def _setup(checkpoint, spec, device, numerics, backend, plan=None, cuda_graphs=True):
    import torch

    from v4c.session import open_session
    from v4c.spec import load_spec

    if numerics not in (None, "official", "plain"):
        raise V4CError(f"--numerics: expected official or plain, got {numerics!r}")
    if backend not in ("auto", "torch", "triton"):
        raise V4CError(f"--backend: expected auto, torch or triton, got {backend!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        here = "cpu, cuda" if torch.cuda.is_available() else "cpu"
        raise V4CError(f"--device: {device!r} is not available here ({here})")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    log = lambda message: typer.echo(message, err=True)  # noqa: E731
    return open_session(
        checkpoint,
        load_spec(spec) if spec else None,
        device=device,
        dtype=dtype,
        numerics=numerics,
        backend=backend,
        plan_dir=plan,
        cuda_graphs=cuda_graphs,
        log=log,
    )


def _reply(
    session, prompt_ids: list[int], max_new: int, sampler, reset: bool = True, stream: bool = True
) -> list[int]:
    """Generate after `prompt_ids`, streaming text to stdout (unless `stream` is off);
    `reset=False` appends them to the engine's sequence."""
    from v4c.runtime.generate import generate
    from v4c.runtime.tokenizer import StreamDecoder

    decoder = StreamDecoder(session.tokenizer, skip_special_tokens=True)

    def show(_: int, token: int) -> None:
        sys.stdout.write(decoder.push(token))
        sys.stdout.flush()

    result = generate(session.engine, [prompt_ids], sampler, max_new_tokens=max_new,
                      stop_ids={session.tokenizer.eos_id}, on_token=show if stream else None,
                      reset=reset)  # fmt: skip
    if stream:
        sys.stdout.write(decoder.flush() + "\n")
    typer.echo(
        f"[{result.prompt_tokens[0]} prompt tokens, {result.generated_tokens[0]} new "
        f"({result.stop_reasons[0]}); prefill {result.prefill_s:.2f} s, decode "
        f"{result.tokens_per_s:.1f} tokens/s]",
        err=True,
    )
    return result.tokens[0]


def _parsed(session, prompt: str, reply: list[int]) -> dict:
    """The reply as the assistant message it encodes (reasoning, content, tool calls)."""
    from v4c.runtime.chat_parse import parse_reply, starts_in_reasoning

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
    plan: PlanDir = None,
    cuda_graphs: CudaGraphs = True,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the reply as the parsed message (JSON), not streamed text."
        ),
    ] = False,
) -> None:
    """Generate a reply to one prompt, streaming tokens; prints tokens/s at the end."""
    from v4c.runtime.chat import encode_chat
    from v4c.runtime.chat_messages import read_messages
    from v4c.runtime.sampler import Sampler

    if (prompt is None) == (messages is None) or (messages is not None and not chat):
        raise V4CError("give --prompt, or --messages FILE (chat encoding only)")
    conversation = read_messages(messages) if messages else [{"role": "user", "content": prompt}]
    sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    session = _setup(checkpoint, spec, device, numerics, backend, plan, cuda_graphs)
    tok = session.tokenizer
    if chat:
        text = encode_chat(conversation, thinking=thinking)
        ids = tok.encode(text)
    else:
        text, ids = prompt, [tok.bos_id, *tok.encode(prompt)]
    reply = _reply(session, ids, max_new_tokens, sampler, stream=not json_out)
    if json_out:
        typer.echo(json.dumps(_parsed(session, text, reply), ensure_ascii=False))


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
    plan: PlanDir = None,
    cuda_graphs: CudaGraphs = True,
) -> None:
    """An interactive chat: one user message a line, empty line or EOF to end. The reply is
    kept as the message it parses to, so the history is the official one; a turn feeds
    the engine only the tokens added where that history extends what the engine holds
    (not in thinking mode, where the earlier reasoning is dropped from the history)."""
    from v4c.runtime.chat import encode_chat
    from v4c.runtime.sampler import Sampler

    sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    session = _setup(checkpoint, spec, device, numerics, backend, plan, cuda_graphs)
    messages: list[dict] = []
    fed: list[int] = []  # the tokens the engine's sequence holds
    session.engine.reset(1)
    while True:
        typer.echo("> ", nl=False, err=True)
        line = sys.stdin.readline()
        if not line.strip():
            break
        messages.append({"role": "user", "content": line.strip()})
        prompt = encode_chat(messages, thinking=thinking)
        ids = session.tokenizer.encode(prompt)
        if ids[: len(fed)] != fed:  # the rendering of earlier turns changed: start again
            session.engine.reset(1)
            fed = []
        reply = _reply(session, ids[len(fed) :], max_new_tokens, sampler, reset=False)
        fed = ids + reply[:-1]  # the last new token was sampled, not fed
        messages.append(_parsed(session, prompt, reply))
