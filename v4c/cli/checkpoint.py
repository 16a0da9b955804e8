"""`v4c checkpoint make-tiny | convert`: create the tiny default checkpoint, and rewrite a
checkpoint folder in another layout. torch is imported inside the commands only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

checkpoint_app = typer.Typer(help="Create and convert checkpoint folders.", no_args_is_help=True)


@checkpoint_app.command("make-tiny")
def make_tiny_command(
    folder: Annotated[Path, typer.Argument(help="The folder to write (created if needed).")],
    seed: Annotated[int, typer.Option(help="Random-weights seed; same seed, same bytes.")] = 0,
) -> None:
    """Write the tiny random model (specs/tiny.yaml) in the official layout, 2 shards."""
    from v4c.runtime.checkpoint import make_tiny

    make_tiny(folder, seed=seed)
    typer.echo(f"wrote {folder} (tiny, seed {seed}, official layout)")


@checkpoint_app.command("convert")
def convert_command(
    src: Annotated[Path, typer.Argument(help="A checkpoint folder in any layout.")],
    dst: Annotated[Path, typer.Argument(help="The folder to write.")],
    to: Annotated[Literal["hf", "official"], typer.Option("--to", help="Target layout.")],
    dtype: Annotated[
        Literal["fp32", "bf16"], typer.Option(help="hf: dtype of the bf16 tensors.")
    ] = "bf16",
) -> None:
    """Rewrite the checkpoint SRC (any layout, detected) in another layout at DST.

    hf: dequantised in --dtype, without MTP; official: quantised as SRC's config.json says.
    """
    import torch

    from v4c.ir.types import torch_dtype
    from v4c.runtime.checkpoint import load_checkpoint, write_hf, write_official

    if to == "hf":
        spec, weights = load_checkpoint(src, dtype=torch_dtype(dtype))
        write_hf(dst, spec, weights, dtype=torch_dtype(dtype))
    else:
        spec, weights = load_checkpoint(src, dtype=torch.float32)
        write_official(dst, spec, weights)
    typer.echo(f"wrote {dst} ({to} layout, {len(weights)} tensors)")
