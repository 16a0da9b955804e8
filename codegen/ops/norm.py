"""Parameters of the RMSNorm templates (V4_REFERENCE §4): the plain norm, its fusion with
the RoPE after it (per-head q norm, kv norm), and a layer's q and kv norms in one launch."""

from __future__ import annotations

from typing import Any

from v4c.codegen.params import Operands, Template, pow2, template


@template("rms_norm")
class RmsNorm(Template):
    dim: int
    weighted: bool
    eps: float
    block: int
    inline: bool  # numerics official: the weightless q norm op by op in x's dtype (§12.1)

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> RmsNorm:
        dim = ops["x"].shape[-1]
        return cls(
            dim=dim, weighted=attrs["weighted"], eps=attrs["eps"], block=pow2(dim),
            inline=attrs.get("inline", False),
        )  # fmt: skip


@template("rms_norm_rope")
class RmsNormRope(Template):
    dim: int
    rope_dim: int
    heads: int  # rows per token: H for the per-head q norm, 1 for kv
    weighted: bool
    eps: float
    theta: float
    yarn: tuple[float, int, float, float] | None
    inline: bool  # as RmsNorm's

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> RmsNormRope:
        shape = ops["x"].shape
        return cls(
            dim=shape[-1], rope_dim=attrs["rope_dim"], heads=shape[2] if len(shape) == 4 else 1,
            weighted=attrs["weighted"], eps=attrs["eps"], theta=attrs["theta"], yarn=attrs["yarn"],
            inline=attrs.get("inline", False),
        )  # fmt: skip


@template("qkv_norm")
class QkvNorm(Template):
    q_dim: int
    kv_dim: int
    rope_dim: int
    q_eps: float
    kv_eps: float
    theta: float
    yarn: tuple[float, int, float, float] | None
    block_q: int
    block_kv: int
    block_pairs: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> QkvNorm:
        q, kv = ops["q"].shape, ops["kv"].shape
        if len(kv) != 3 or q[:2] != kv[:2]:
            raise ValueError(f"qkv_norm: q {q} and kv {kv} are not one row each per token")
        rope = attrs["rope_dim"]
        return cls(
            q_dim=q[-1], kv_dim=kv[-1], rope_dim=rope, q_eps=attrs["q_eps"],
            kv_eps=attrs["kv_eps"], theta=attrs["theta"], yarn=attrs["yarn"],
            block_q=pow2(q[-1]), block_kv=pow2(kv[-1]), block_pairs=pow2(rope // 2),
        )  # fmt: skip
