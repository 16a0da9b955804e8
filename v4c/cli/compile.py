"""`v4c compile SPEC -o DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from v4c.errors import V4CError
from v4c.passes.options import CompileOptions
from v4c.spec import load_spec
from v4c.spec.parallel import DEVICE_GB

DEFAULTS = CompileOptions()

Passes = Annotated[
    str | None,
    typer.Option(
        "--passes", help="Comma-separated pipeline (default: the spec's, else the built-in)."
    ),
]


def compile_command(
    spec_file: Annotated[str, typer.Argument(help="A spec YAML file, or a shipped spec name.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")] = Path(
        "build/compiled"
    ),
    passes: Passes = None,
    disable_pass: Annotated[
        list[str] | None, typer.Option("--disable-pass", help="Skip a pass (repeatable).")
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Sequences per step.")] = DEFAULTS.max_batch,
    max_tokens: Annotated[
        int, typer.Option(min=1, help="Tokens per sequence in a prefill step.")
    ] = DEFAULTS.max_tokens,
    max_seq: Annotated[
        int, typer.Option(min=1, help="Longest sequence the caches hold.")
    ] = DEFAULTS.max_seq,
    max_draft: Annotated[
        int,
        typer.Option(
            min=0,
            help="Most draft tokens a verify step checks (speculative decoding with the MTP "
            "block); 0: no draft and verify entry points.",
        ),
    ] = DEFAULTS.max_draft,
    all_logits: Annotated[
        bool, typer.Option("--all-logits", help="Logits at every token, not the last.")
    ] = False,
    dump_ir: Annotated[
        Path | None,
        typer.Option("--dump-ir", help="Where the IR after each pass goes (default OUT/ir)."),
    ] = None,
    numerics: Annotated[
        str,
        typer.Option(
            help="plain, or official: also the rounding the official code simulates "
            "(docs/numerics.md)."
        ),
    ] = DEFAULTS.numerics,
    weights: Annotated[
        str,
        typer.Option(
            help="as-stored: FP8/FP4 weights stay so where the kernels read them; bf16: widen all."
        ),
    ] = DEFAULTS.weights,
    dtype: Annotated[
        str, typer.Option(help="What activations are held in at run time: bf16 or fp32 (CPU).")
    ] = DEFAULTS.dtype,
    tp: Annotated[
        int | None,
        typer.Option(
            "--tp",
            min=1,
            help="Tensor-parallel ranks: the plan is one rank's (default: the "
            "spec's parallel.tp, else 1).",
        ),
    ] = None,  # fmt: skip
    ep: Annotated[
        int | None,
        typer.Option("--ep", min=1, help="Expert-parallel ranks (default: parallel.ep, else 1)."),
    ] = None,
    device_gb: Annotated[
        float,
        typer.Option(
            "--device-gb",
            min=0.001,
            help="Device memory (GiB) one rank must fit in: the routed experts that do not fit "
            "live in pinned host memory.",
        ),
    ] = DEVICE_GB,
    targets: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help="Also build every kernel ahead of time for a GPU target (sm_80, sm_89, "
            "sm_90; repeatable), no GPU needed: DIR/targets/<target>.json and an estimated "
            "cost section in report.md.",
        ),
    ] = None,
    expert_profile: Annotated[
        Path | None,
        typer.Option(
            "--expert-profile",
            help="A routing profile (v4c run/bench --record-experts FILE): the most picked "
            "experts stay on the device (default: the lowest expert ids).",
        ),
    ] = None,
) -> None:
    """Build the IR of a spec, run the passes, write plan.json, ir/ dumps and report.md."""
    from v4c.compile import write_output
    from v4c.budget import offload_line
    from v4c.report import fits_line
    from v4c.spec.parallel import grid_problems

    spec = load_spec(spec_file)
    tp, ep = tp or spec.parallel.tp, ep or spec.parallel.ep
    problems = grid_problems(spec, tp, ep)
    if problems:
        raise V4CError("\n".join(f"--tp {tp} --ep {ep}: {p}" for p in problems))
    pipeline = [p.strip() for p in passes.split(",") if p.strip()] if passes else None
    if numerics not in ("plain", "official"):
        raise V4CError(f"--numerics: expected plain or official, got {numerics!r}")
    if weights not in ("as-stored", "bf16"):
        raise V4CError(f"--weights: expected as-stored or bf16, got {weights!r}")
    if dtype not in ("bf16", "fp32"):
        raise V4CError(f"--dtype: expected bf16 or fp32, got {dtype!r}")
    options = CompileOptions(
        max_batch=max_batch, max_tokens=max_tokens, max_seq=max_seq,
        logits="all" if all_logits else "last", max_draft=max_draft, numerics=numerics,
        weights=weights, dtype=dtype, tp=tp, ep=ep,
    )  # fmt: skip
    from v4c.expert_profile import ExpertProfile

    # any spec's profile of the same layers and expert counts applies (a checkpoint may name
    # its spec otherwise: the embedded tiny is tiny-seed0); the counts are checked per layer
    profile = ExpertProfile.load(expert_profile) if expert_profile else None
    compiled = write_output(
        spec, out, dump_ir, device_gb, profile, options=options, pipeline=pipeline,
        disabled=set(disable_pass or []),
    )  # fmt: skip
    for r in compiled.records:
        state = "skipped" if r.skipped else ("changed" if r.changed else "unchanged")
        typer.echo(f"  {r.name:<17} {state:<9} {r.nodes:>6} nodes {r.ms:8.1f} ms")
    decode = compiled.plan.entries["decode"]
    kernels = sum(1 for launch in decode.launches if launch.kind != "view")
    typer.echo(
        f"wrote {out}/plan.json, {out}/report.md and the IR after each pass "
        f"({kernels} kernel launches per decode step)"
    )
    typer.echo(fits_line(compiled.plan, device_gb))
    if compiled.plan.offload:
        typer.echo(offload_line(compiled.plan.offload) + " (see report.md)")
    if targets:
        from v4c.codegen.lens import write_targets

        def building(kernel: str) -> None:
            typer.echo(f"  building {kernel} ...", err=True)

        for line in write_targets(compiled.plan, out, targets, building):
            typer.echo(line)
        if compiled.plan.offload:
            from v4c.budget_report import append_lens

            for line in append_lens(compiled.budget, compiled.plan, out, targets):
                typer.echo(line)
