"""`v4c run MODEL --prompt ...`: one reply streamed, or (--prompt-file) a batch as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from v4c.cli.experts import DeviceGb, ExpertProfileOpt, RecordExperts, save_profile
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
from v4c.cli.reply import parsed, reply
from v4c.cli.setup import choose_drafter, open_cli_session
from v4c.errors import V4CError


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
    device_gb: DeviceGb = None,
    expert_profile: ExpertProfileOpt = None,
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
            device_gb=device_gb, expert_profile=expert_profile,
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
        answer = reply(
            session, limit, ids, max_new_tokens, sampler, stream=not json_out, drafter=drafter,
            penalties=penalties, stops=stop,
        )  # fmt: skip
        if json_out:
            message = parsed(session, text, answer.tokens, stop)
            typer.echo(json.dumps(message, ensure_ascii=False))
        if picks is not None:
            save_profile(record_experts, session.spec.name, picks)
        if answer.interrupted:  # Ctrl-C: what came is printed; the shell's code for it
            raise typer.Exit(130)


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
