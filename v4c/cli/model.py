"""The model of `v4c run MODEL` and `v4c chat MODEL`, given first as other engines take it
(`vllm serve MODEL`, `llama-cli -m MODEL`): a checkpoint folder or Hub repo id (what
--checkpoint takes), or with --random-weights a spec (what --spec takes), as `v4c bench`
reads its first argument.

Why one function for both commands: which option the argument stands for is decided once,
before anything is loaded, and a spec given without --random-weights (or a model given
twice) is one line saying what to pass instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from v4c.errors import SpecError, V4CError
from v4c.hub import is_repo_id

Model = Annotated[
    str | None,
    typer.Argument(
        metavar="MODEL",
        help="A checkpoint folder or Hugging Face Hub repo id (as --checkpoint), or with "
        "--random-weights a spec, file or shipped name (as --spec). Default: the embedded "
        "tiny model.",
        show_default=False,
    ),
]


def place_model(
    model: str | None,
    checkpoint: Path | None,
    spec: str | None,
    plan: Path | None,
    random_weights: bool,
) -> tuple[Path | None, str | None]:
    """(--checkpoint, --spec) with MODEL put in the place it stands for."""
    if model is None:
        return checkpoint, spec
    for given, option in ((checkpoint, "--checkpoint"), (plan, "--plan")):
        if given is not None:
            raise V4CError(f"{model} and {option}: give the model once (drop one of them)")
    if random_weights:
        if spec is not None:
            raise V4CError(f"{model} and --spec: give the spec once (drop one of them)")
        return None, model
    path = Path(model).expanduser()
    if not path.is_dir() and _is_spec(model):
        raise V4CError(
            f"{model}: a spec, not a checkpoint; to run it without one, add --random-weights"
        )
    if not path.exists() and not is_repo_id(model):
        raise V4CError(
            f"{model}: no such checkpoint folder, Hugging Face Hub repo id (owner/name) or "
            "spec; the model comes first, a prompt goes in --prompt"
        )
    return path, spec


def _is_spec(name: str) -> bool:
    from v4c.spec.load import resolve_spec_path

    try:
        resolve_spec_path(name)
    except SpecError:
        return False
    return True
