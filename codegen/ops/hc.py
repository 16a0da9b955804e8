"""Parameters of the hyper-connection templates (V4_REFERENCE §3).

The five kinds that read all n streams of a token (hc_pre, hc_head and their fusions with the
hc_post before and the RMSNorm after them) share one template, `hc_streams.py.j2`, rendered
with three flags; each kind fixes its flags here. hc_post alone is its own tiled template.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, computed_field

from v4c.codegen.params import Operands, Template, pow2, template, tile

MAX_BLOCK = 1024  # columns per program of the copy kernel (hc_expand)

# The split-K projection (templates/hc_streams.py.j2). Splits: one per SM of the target
# (H100 SXM: 132), at most one per D-block of 16 columns: Flash (D = 4096, 256 blocks) has
# 132 splits of one or two blocks, 132 CTAs at decode batch 1. The count comes from D and the
# target alone, never from the token count, so a token's sum over splits is the same in any
# batch; for the same reason the token block is fixed (16, the smallest `tl.dot` tile) at
# decode and prefill. 16 columns: a [16 tokens, n, 16] bf16 tile still loads 16 bytes a thread.
SPLIT_CTAS = 132
SPLIT_BLOCK_D = 16
SPLIT_BLOCK_T = 16
MAX_BLOCK_S = 128  # splits summed per tile by the finishing program
# The finishing program holds a collapsed row in registers: [D padded] fp32, 32 per thread
# at D = 4096 with 4 warps; wider rows (Pro's 7168 -> 8192) take 8 warps.
WIDE_ROW = 4096


class HcStreams(Template):
    post: bool  # operands start with (a, X, post, comb) and X' = hc_post(...) is the first result
    head: bool  # hc_head: the pre gate only (fn has n rows), no Sinkhorn
    norm: bool  # the RMSNorm (operand `norm`) applied to the collapsed row
    streams: int  # n
    dim: int  # D
    iters: int | None  # Sinkhorn iterations; None for hc_head
    eps: float
    norm_eps: float
    rms_eps: float | None
    streams_p: int  # n padded to a power of two
    rows_p: int  # rows of fn + 1 (the sum of squares) padded to a power of two, >= 16 (`tl.dot`)
    block_t: int  # tokens per program
    block_d: int  # columns per D-block of a split
    splits: int = Field(ge=1)  # S: split s projects the D-blocks s, s + S, ...
    dim_p: int  # D padded to a power of two: the collapsed row's lanes
    warps: int
    moe_k: int = 0  # post kinds: `a` is the MoE combine of K expert rows + the shared expert

    @computed_field
    @property
    def block_s(self) -> int:
        """Splits per tile of the reduction (follows `splits`, which tests may force)."""
        return min(MAX_BLOCK_S, pow2(self.splits))

    FLAGS: ClassVar[tuple[bool, bool, bool]]  # (post, head, norm) of the kind
    TEMPLATE = "hc_streams"

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> HcStreams:
        post, head, norm = cls.FLAGS
        *_, n, d = ops["X"].shape
        rows = n if head else (2 + n) * n
        splits = max(1, min(SPLIT_CTAS, -(-d // SPLIT_BLOCK_D)))
        return cls(
            post=post, head=head, norm=norm, streams=n, dim=d,
            iters=None if head else attrs["iters"], eps=attrs["eps"], norm_eps=attrs["norm_eps"],
            rms_eps=attrs["rms_eps"] if norm else None,
            streams_p=pow2(n), rows_p=tile(rows + 1), block_t=SPLIT_BLOCK_T, block_d=SPLIT_BLOCK_D,
            splits=splits, dim_p=pow2(d), warps=8 if pow2(d) > WIDE_ROW else 4,
            moe_k=ops["rows"].shape[-1] if attrs.get("moe") else 0,
        )  # fmt: skip


@template("hc_pre")
class HcPre(HcStreams):
    FLAGS = (False, False, False)


@template("hc_pre_norm")
class HcPreNorm(HcStreams):
    FLAGS = (False, False, True)


@template("hc_post_pre_norm")
class HcPostPreNorm(HcStreams):
    FLAGS = (True, False, True)


@template("hc_head")
class HcHead(HcStreams):
    FLAGS = (False, True, False)


@template("hc_post_head_norm")
class HcPostHeadNorm(HcStreams):
    FLAGS = (True, True, True)


@template("hc_post")
class HcPost(Template):
    streams: int
    dim: int
    streams_p: int
    block_d: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> HcPost:
        *_, n, d = ops["X"].shape
        return cls(streams=n, dim=d, streams_p=pow2(n), block_d=min(256, pow2(d)))


@template("hc_expand")
class HcExpand(Template):
    mult: int
    dim: int
    block_d: int

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> HcExpand:
        dim = ops["h"].shape[-1]
        return cls(mult=attrs["mult"], dim=dim, block_d=min(MAX_BLOCK, pow2(dim)))
