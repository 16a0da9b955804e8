"""The kernel lens as text: the section `v4c compile --target` adds to report.md, and the
lines `v4c bench --target` prints. Every time shown is labelled an estimate."""

from __future__ import annotations

from collections import defaultdict


def _us(x: float) -> str:
    return f"{x / 1000:.2f} ms" if x >= 1000 else f"{x:.1f} µs"


def _mma(row: dict) -> str:
    if row["kind"] != "kernel":
        return "library"
    return ", ".join(sorted(row.get("mma") or {})) or "none"


def entry_lines(data: dict) -> list[str]:
    """One line per entry bucket: launches, estimated step, roofline, ratio."""
    lines = []
    for entry, tags in data["entries"].items():
        for tag, s in tags.items():
            ratio = f"{s['ratio']:.1f}x" if s["ratio"] else "-"
            lines.append(
                f"{entry} {tag}: {s['launches']} launches, estimated step {_us(s['est_us'])} "
                f"(estimate) against a roofline of {_us(s['roofline_us'])} ({ratio})"
            )
    return lines


def section(data: dict) -> str:
    """The report.md section of one target."""
    out = [
        f"## Kernel lens: {data['target']} on {data['card']} (estimate)",
        "",
        "Built ahead of time for the target, never run; times are ESTIMATES of the cost model "
        "in codegen/cost.py:",
        f"`{data['model']}`.",
        "",
        "| entry | bucket | launches | est. step | roofline | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for entry, tags in data["entries"].items():
        for tag, s in tags.items():
            ratio = f"{s['ratio']:.1f}" if s["ratio"] else "-"
            out.append(
                f"| {entry} | {tag} | {s['launches']} | {_us(s['est_us'])} | "
                f"{_us(s['roofline_us'])} | {ratio} |"
            )
    for entry, tags in data["entries"].items():
        for tag, s in tags.items():
            out += ["", f"### {entry} {tag}: top launches by estimate", ""]
            out += ["| node | kernel | est. | roofline | bound | CTAs |", "|---" * 6 + "|"]
            for r in s["top10"]:
                out.append(
                    f"| {r['node']} | {r['template']}.{r['kernel']} | {_us(r['est_us'])} | "
                    f"{_us(r['roofline_us'])} | {r['bound']} | {r['ctas'] or '-'} |"
                )
    out += ["", *template_table(data)]
    return "\n".join(out) + "\n"


def template_table(data: dict) -> list[str]:
    """Per template and kernel, at each entry's first bucket (decode: batch 1)."""
    first = {entry: next(iter(tags)) for entry, tags in data["entries"].items()}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in data["launches"]:
        if r["bucket"] == first[r["entry"]]:
            groups[(r["entry"], r["template"], r["kernel"])].append(r)
    out = [
        "### Per template (decode at batch 1; other entries at their limit)",
        "",
        "| entry | kernel | launches | est. total | roofline | MMA | CTAs | warps | regs | "
        "spill B | smem B | loads (B: count) | bound / flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {entry: i for i, entry in enumerate(data["entries"])}
    for (entry, template, kernel), rows in sorted(
        groups.items(), key=lambda kv: (order[kv[0][0]], -sum(r["est_us"] for r in kv[1]))
    ):
        r = rows[0]
        ctas = sorted({x["ctas"] for x in rows if x["ctas"]})
        widths = sorted((r.get("loads") or {}).items(), key=lambda wn: int(wn[0]))
        loads = " ".join(f"{w}:{n}" for w, n in widths)
        flags = "; ".join([r["bound"], *(f for f in r["flags"] if not f.startswith(r["bound"]))])
        out.append(
            f"| {entry} | {template}.{kernel} | {len(rows)} | "
            f"{_us(sum(x['est_us'] for x in rows))} | "
            f"{_us(sum(x['roofline_us'] for x in rows))} | {_mma(r)} | "
            f"{'/'.join(map(str, ctas)) or '-'} | {r.get('warps', '-')} | "
            f"{r.get('registers', '-')} | {r.get('spill_bytes', '-')} | {r.get('smem', '-')} | "
            f"{loads or '-'} | {flags} |"
        )
    return out
