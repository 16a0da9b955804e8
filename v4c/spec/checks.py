"""Cross-field rules of a spec. Each rule names the field it is about, so that the error
points at the line a user must change; all failing rules are reported together."""

from __future__ import annotations

from v4c.spec.layers import expand
from v4c.spec.schema import CSA_RATIO, ModelSpec

Problem = tuple[str, str]  # (field path, message)


class Unjudged(Exception):
    """Raised by a stand-in spec for a field that failed validation (see `check`)."""


def check(spec: ModelSpec) -> list[Problem]:
    """Every failing rule. `spec` may be a stand-in whose invalid fields raise on reading
    (after a field error, see `load._ValidParts`): a rule group that reads one is skipped."""
    out = []
    for rules in (_layers, _attention, _moe, _quant, _parallel):
        try:
            out += rules(spec)
        except Unjudged:
            pass
    return out


def _layers(spec: ModelSpec) -> list[Problem]:
    try:
        kinds = expand(spec.layers)
    except ValueError as err:
        return [("layers", str(err))]
    out = []
    if len(kinds) != spec.num_layers:
        out.append(
            ("layers", f"expands to {len(kinds)} layers, must equal num_layers ({spec.num_layers})")
        )
    if spec.moe.hash_layers > spec.num_layers:
        out.append(
            (
                "moe.hash_layers",
                f"must be <= num_layers ({spec.num_layers}), got {spec.moe.hash_layers}",
            )
        )
    return out


def _attention(spec: ModelSpec) -> list[Problem]:
    a, out = spec.attention, []
    if a.rope_head_dim > a.head_dim:
        out.append(
            (
                "attention.rope_head_dim",
                f"must be <= head_dim ({a.head_dim}), got {a.rope_head_dim}",
            )
        )
    if a.rope_head_dim % 2:
        out.append(("attention.rope_head_dim", f"must be even (pairs), got {a.rope_head_dim}"))
    if a.num_heads % a.o_groups:
        out.append(
            (
                "attention.o_groups",
                f"must divide num_heads ({a.num_heads}) into whole head groups, got {a.o_groups}",
            )
        )
    if a.hca_ratio == CSA_RATIO:
        out.append(("attention.hca_ratio", f"must differ from the CSA ratio {CSA_RATIO}, got 4"))
    ix = a.indexer
    if ix.head_dim & (ix.head_dim - 1):
        out.append(
            ("attention.indexer.head_dim", f"must be a power of two (Hadamard), got {ix.head_dim}")
        )
    if a.rope_head_dim > ix.head_dim:
        out.append(
            (
                "attention.indexer.head_dim",
                f"must be >= attention.rope_head_dim ({a.rope_head_dim}), got {ix.head_dim}",
            )
        )
    return out


def _moe(spec: ModelSpec) -> list[Problem]:
    m, out = spec.moe, []
    if m.top_k > m.num_experts:
        out.append(("moe.top_k", f"must be <= moe.num_experts ({m.num_experts}), got {m.top_k}"))
    return out


def _quant(spec: ModelSpec) -> list[Problem]:
    q, out = spec.quant, []
    if any(b <= 0 for b in q.block):
        out.append(("quant.block", f"must be two positive sizes, got {list(q.block)}"))
    if q.expert_format == "fp4":
        for path, dim in (
            ("hidden_size", spec.hidden_size),
            ("moe.intermediate_size", spec.moe.intermediate_size),
        ):
            if dim % q.expert_block:
                out.append(
                    (path, f"must be a multiple of {q.expert_block} for FP4 experts, got {dim}")
                )
    return out


def _parallel(spec: ModelSpec) -> list[Problem]:
    from v4c.spec.parallel import grid_problems

    p = spec.parallel
    return [("parallel", msg) for msg in grid_problems(spec, p.tp, p.ep)] if p.tp * p.ep > 1 else []
