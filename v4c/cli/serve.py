"""`v4c serve`: the OpenAI-compatible HTTP server (v4c.serve) on a model and its limits."""

from __future__ import annotations

from typing import Annotated

import typer

from v4c.cli.experts import DeviceGb, ExpertProfileOpt
from v4c.cli.options import (
    Backend,
    Checkpoint,
    Device,
    DraftTokens,
    MaxSeq,
    Numerics,
    PlanDir,
    Threads,
)
from v4c.cli.setup import log, open_cli_session
from v4c.envs import API_KEY
from v4c.errors import V4CError


def serve_command(
    checkpoint: Checkpoint = None,
    plan: PlanDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Cache rows: requests decoded together at most.")
    ] = 32,
    max_seq: MaxSeq = None,
    max_waiting: Annotated[
        int, typer.Option(min=0, help="Requests that may wait for a row; more get 429.")
    ] = 256,
    prefill_chunk: Annotated[
        int, typer.Option(min=1, help="Prompt tokens prefilled per step, all requests together.")
    ] = 256,
    api_key: Annotated[
        str | None, typer.Option(envvar=API_KEY, help="Require 'Authorization: Bearer KEY'.")
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="The model name clients ask for (default: the spec's).")
    ] = None,
    device: Device = None,
    numerics: Numerics = None,
    backend: Backend = "auto",
    threads: Threads = None,
    speculative: Annotated[
        str | None,
        typer.Option(
            help="mtp: greedy requests draft with the MTP block and are verified in "
            "one main-model step (the same tokens); off (the default)."
        ),
    ] = None,
    draft_tokens: DraftTokens = 1,
    device_gb: DeviceGb = None,
    expert_profile: ExpertProfileOpt = None,
) -> None:
    """Serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, /health,
    /metrics) with continuous batching; Ctrl-C or SIGTERM stops it, ending requests in
    flight with finish reason "abort"."""
    from v4c.runtime.launch import place_from_env

    if place_from_env() is not None:
        raise V4CError("v4c serve runs in one process; serving over ranks is not supported yet")
    from v4c.serve.server import run_server

    session, limit = open_cli_session(
        checkpoint, None, device, numerics, backend, max_seq, threads, plan,
        max_batch=max_batch, max_tokens=prefill_chunk, device_gb=device_gb,
        expert_profile=expert_profile,
    )  # fmt: skip
    drafter = None
    if speculative == "mtp":
        if "draft" not in session.engine.programs:
            raise V4CError("--speculative mtp: the plan has no draft entry point (no MTP weights)")
        from v4c.runtime.rowdraft import RowDrafter

        drafter = RowDrafter(session.engine, draft_tokens)
        log(f"speculative mtp, {draft_tokens} draft token{'s' * (draft_tokens > 1)} "
            "(greedy requests without logprobs)")  # fmt: skip
    elif speculative not in (None, "off"):
        raise V4CError(f"--speculative: expected off or mtp, got {speculative!r}")
    run_server(
        session, limit, host=host, port=port, max_waiting=max_waiting,
        prefill_chunk=prefill_chunk, api_key=api_key, name=served_model_name, log=log,
        drafter=drafter,
    )  # fmt: skip
