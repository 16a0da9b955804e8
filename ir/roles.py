"""Typed roles: what part of the model an op of a general kind computes, set once by the
builder (`v4c.ir.build`) from the spec's structure, so that a pass decides by the role and
never by a node id or a checkpoint name (ids are readable labels, free to change).

A role is a `str` enum: it prints, parses and serialises as its value (`'q_b'`), and a
parsed or loaded op whose role is the plain string equals the one built with the member.
An op's role is metadata: ops that differ only in it compare equal and share a kernel.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from v4c.ir.op import Op

R = TypeVar("R", bound="_Role")


class _Role(StrEnum):
    def __repr__(self) -> str:
        return repr(self.value)  # the IR text form: a Python literal `ast.literal_eval` reads


class Projection(_Role):
    """Which projection a `linear` computes (V4_REFERENCE §§6-10 for the names)."""

    NONE = ""  # a linear no pass tells apart (tests, hand-built graphs)
    Q_A = "q_a"  # wq_a: x -> the q latent
    Q_B = "q_b"  # wq_b: q latent -> the heads' q
    KV = "kv"  # wkv: x -> the single kv head
    O_B = "o_b"  # wo_b: the o-groups' outputs -> hidden
    LM_HEAD = "lm_head"  # head.weight: hidden -> logits
    E_PROJ = "e_proj"  # MTP: the next token's embedding -> hidden
    H_PROJ = "h_proj"  # MTP: the streams' collapse -> hidden
    INDEXER_Q = "indexer_q"  # the indexer's wq_b: q latent -> its heads' q
    INDEXER_WEIGHTS = "indexer_weights"  # the indexer's weights_proj: x -> head weights
    COMPRESSOR_KV = "compressor_kv"  # a compressor's wkv: x -> K
    COMPRESSOR_GATE = "compressor_gate"  # a compressor's wgate: x -> Z
    GATE = "gate"  # the MoE router: x -> fp32 expert logits (made by schedule_moe)


class CompressorRole(_Role):
    """Which cache a `compressor` fills: the attention's compressed KV entries (at the
    layer's ratio) or the indexer's keys (at the CSA ratio, §7)."""

    ATTENTION = "attention"
    INDEXER = "indexer"


def as_role(op: Op, kind: type[R], value: object) -> R:
    """`value` (a member, or its string from a dump or a plan) as a member of `kind`."""
    try:
        return kind(value)
    except ValueError:
        roles = ", ".join(repr(r.value) for r in kind)
        raise op.fail(f"role {value!r} is not one of {roles}") from None
