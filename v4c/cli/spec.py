"""`v4c spec show | validate | import | export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from v4c.errors import SpecError
from v4c.paths import need_file
from v4c.spec import ModelSpec, layer_table, load_spec
from v4c.spec.config_io import Format, spec_from_config, spec_to_config
from v4c.spec.params import PARTS, count_params

spec_app = typer.Typer(help="Inspect, validate and convert model specs.", no_args_is_help=True)

SpecFile = Annotated[str, typer.Argument(help="A spec YAML file, or a shipped spec name (flash).")]


@spec_app.command("show")
def show(file: SpecFile) -> None:
    """The per-layer table and the parameter counts of a spec."""
    spec = load_spec(file)
    console = Console()
    console.print(f"[bold]{spec.name}[/bold]  {spec.description}", highlight=False)
    console.print(_layer_table(spec))
    console.print(_param_table(spec))


@spec_app.command("validate")
def validate(files: Annotated[list[str], typer.Argument(help="Spec files.")]) -> None:
    """Validate spec files; every problem of every file is reported."""
    problems = []
    for file in files:
        try:
            spec = load_spec(file)
        except SpecError as err:
            problems += err.problems
        else:
            typer.echo(f"ok: {file} ({spec.name}, {spec.num_layers} layers)")
    if problems:
        raise SpecError(problems)


@spec_app.command("import")
def import_config(
    config: Annotated[Path, typer.Argument(help="An official or HF config.json.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The spec YAML to write.")],
    name: Annotated[str | None, typer.Option(help="Spec name (default: the folder's).")] = None,
) -> None:
    """Write a spec from a config.json (the layout is detected)."""
    need_file(config, "config.json file")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SpecError([f"{config}: cannot read JSON: {err}"]) from None
    spec = spec_from_config(data, name or config.resolve().parent.name, source=str(config))
    text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
    _write(out, f"# imported by `v4c spec import {config}`\n{text}")
    typer.echo(f"wrote {out}")


@spec_app.command("export")
def export(
    file: SpecFile,
    fmt: Annotated[Format, typer.Option("--format", help="official or hf.")] = "official",
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Default: stdout.")] = None,
) -> None:
    """Write the config.json of a spec in the official or the HF layout."""
    text = json.dumps(spec_to_config(load_spec(file), fmt), indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        _write(out, text)
        typer.echo(f"wrote {out}")


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as err:
        raise SpecError([f"{path}: cannot write: {err.strerror or err}"]) from None


def _layer_table(spec: ModelSpec) -> Table:
    table = Table(title="layers", title_justify="left")
    for col in ("layer", "attention", "ratio", "indexer", "gate", "rope θ", "yarn"):
        table.add_column(col, justify="right" if col in ("layer", "ratio", "rope θ") else "left")
    for row in layer_table(spec):
        table.add_row(
            f"mtp.{row.index - spec.num_layers}" if row.mtp else str(row.index),
            row.attention,
            str(row.compress_ratio),
            "yes" if row.has_indexer else "",
            row.gate,
            f"{row.rope_theta:g}",
            "yes" if row.yarn else "",
        )
    return table


def _param_table(spec: ModelSpec) -> Table:
    count = count_params(spec)
    table = Table(
        title="parameters",
        title_justify="left",
        caption="active per token: every dense tensor, lm_head, the shared and the top-k routed "
        "experts, one embedding row; MTP on its own line",
        caption_justify="left",
    )
    table.add_column("part")
    table.add_column("params", justify="right")
    table.add_column("share", justify="right")
    for part in PARTS:
        n = count.by_part[part]
        table.add_row(part, human(n), f"{100 * n / count.total:.2f}%")
    table.add_section()
    table.add_row("total (main model, excl. MTP)", human(count.total), "")
    table.add_row("active per token", human(count.active), "")
    table.add_row(
        f"MTP ({spec.mtp.num_layers} block(s), embedding/head shared)", human(count.mtp), ""
    )
    table.add_row("MTP active per token", human(count.active_mtp), "")
    return table


def human(n: int) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)
