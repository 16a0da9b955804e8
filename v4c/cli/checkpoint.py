"""`v4c checkpoint make-tiny | convert`: create the tiny default checkpoint, and rewrite a
checkpoint folder in another layout. torch is imported inside the commands only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from v4c.errors import V4CError

checkpoint_app = typer.Typer(help="Create and convert checkpoint folders.", no_args_is_help=True)


@checkpoint_app.command("make-tiny")
def make_tiny_command(
    folder: Annotated[Path, typer.Argument(help="The folder to write (created if needed).")],
    seed: Annotated[int, typer.Option(help="Random-weights seed; same seed, same bytes.")] = 0,
) -> None:
    """Write the tiny random model (specs/tiny.yaml) in the official layout, 2 shards."""
    try:  # before torch is imported: a folder that cannot be made fails at once
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise V4CError(f"{folder}: cannot create: {err.strerror or err}") from None
    from v4c.runtime.checkpoint import make_tiny

    make_tiny(folder, seed=seed)
    typer.echo(f"wrote {folder} (tiny, seed {seed}, official layout)")


@checkpoint_app.command("convert")
def convert_command(
    src: Annotated[Path, typer.Argument(help="A checkpoint folder in any layout.")],
    dst: Annotated[Path, typer.Argument(help="The folder to write.")],
    to: Annotated[
        Literal["hf", "official"], typer.Option("--to", help="The layout to write: hf or official.")
    ],
    dtype: Annotated[
        Literal["fp32", "bf16"],
        typer.Option(help="fp32 or bf16: what --to hf writes the tensors in."),
    ] = "bf16",
    without_mtp: Annotated[
        bool,
        typer.Option(
            "--without-mtp",
            help="official: write no MTP block (num_nextn_predict_layers 0), as from an HF "
            "checkpoint, which has none.",
        ),
    ] = False,
) -> None:
    """Rewrite the checkpoint SRC (any layout, detected) in another layout at DST.

    hf: dequantised in --dtype, without MTP (transformers' DeepseekV4 has none). official:
    quantised as SRC is; a plain SRC (such as an official checkpoint converted to hf) is
    quantised to FP8 weights and FP4 (else FP8) experts where that is lossless, bit for bit,
    else written plain.
    """
    import torch

    from v4c.ir.types import torch_dtype
    from v4c.paths import need_folder
    from v4c.runtime.checkpoint import load_checkpoint, write_hf, write_official

    need_folder(src, "checkpoint folder")

    if to == "hf":
        spec, weights = load_checkpoint(src, dtype=torch_dtype(dtype))
        written = write_hf(dst, spec, weights, dtype=torch_dtype(dtype))
        note = "; no MTP block: the HF layout has none" if spec.mtp.num_layers else ""
        typer.echo(f"wrote {dst} (hf layout, {written} tensors{note})")
        return
    spec, weights = load_checkpoint(src, dtype=torch.float32)
    has_mtp = any(name.startswith("mtp.") for name in weights)
    if spec.mtp.num_layers and (without_mtp or not has_mtp):
        if not without_mtp:
            raise V4CError(
                f"{src}: has no MTP block (an HF checkpoint carries none) while its config "
                f"sets num_nextn_predict_layers {spec.mtp.num_layers}; pass --without-mtp to "
                "write the official checkpoint without it"
            )
        spec = spec.model_copy(update={"mtp": spec.mtp.model_copy(update={"num_layers": 0})})
        weights = {k: v for k, v in weights.items() if not k.startswith("mtp.")}
    from v4c.runtime.checkpoint.requantise import lossless_storage

    quantised = lossless_storage(spec, weights)
    if quantised is None:
        note = "plain: the weights are not exactly FP8/FP4 values"
    else:
        q = quantised.quant
        note = f"{q.weights} weights, {q.experts or q.weights} experts"
        spec = quantised
    written = write_official(dst, spec, weights, requantised=True)
    typer.echo(f"wrote {dst} (official layout, {note}; {written} tensors)")
