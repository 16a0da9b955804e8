"""Parameters of the hyper-connection templates (V4_REFERENCE §3).

The five kinds that read all n streams of a token (hc_pre, hc_head and their fusions with the
hc_post before and the RMSNorm after them) share one template, `hc_streams.py.j2`, rendered
with three flags; each kind fixes its flags here. hc_post alone is its own tiled template.
"""

from __future__ import annotations

from typing import Any, ClassVar

from v4c.codegen.params import Operands, Template, pow2, template
from v4c.envs import triton_interpret

MAX_BLOCK = 1024  # columns per program of the copy kernel (hc_expand)

# D-block of the per-token loops: fn tiles are [RP, NP, BLOCK_D] fp32. A GPU keeps the tile in
# registers (64); the interpreter pays per loop step, not per lane, so it takes whole rows.
MAX_BLOCK_D = 1024 if triton_interpret() else 64


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
    rows_p: int  # rows of fn padded to a power of two
    block_d: int

    FLAGS: ClassVar[tuple[bool, bool, bool]]  # (post, head, norm) of the kind
    TEMPLATE = "hc_streams"

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> HcStreams:
        post, head, norm = cls.FLAGS
        *_, n, d = ops["X"].shape
        rows = n if head else (2 + n) * n
        return cls(
            post=post, head=head, norm=norm, streams=n, dim=d,
            iters=None if head else attrs["iters"], eps=attrs["eps"], norm_eps=attrs["norm_eps"],
            rms_eps=attrs["rms_eps"] if norm else None,
            streams_p=pow2(n), rows_p=pow2(rows),
            block_d=min(MAX_BLOCK_D, pow2(d)),
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
