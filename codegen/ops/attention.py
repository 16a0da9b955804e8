"""Parameters of the attention template: sparse attention with a sink (the grouped output
projection is a GEMM, `codegen/ops/gemm.py`). Block sizes come from the dims; `tl.dot` needs
at least 16 on every side, so small head counts and row blocks are padded up to 16 and masked.

Sparse attention has two forms, chosen by the launch's tokens per row at the plan's limits:
flash-decoding for a step of a few (decode, verify: every kernel of the form is the same, so
a token verified is the token decoded, bit for bit) and large tiles for a prefill. Both
forms fold the RoPE of `sparse_attention_rope` around the attention when it asks."""

from __future__ import annotations

from typing import Any

from v4c.codegen.jit import CodegenError
from v4c.codegen.params import Dots, Operands, Precision, dot_precision, template, tile
from v4c.ir.types import ir_dtype
from v4c.spec.schema import CSA_RATIO


SPLIT_STEPS = 16  # a step of at most this many tokens a row (decode, verify) splits its keys
SPLIT_HEADS = 16  # heads a flash-decoding program serves (the dots' M: 16 is tl.dot's least)
TARGET_CTAS = 132  # programs a batch-1 query's split aims at: the SMs of an H100/H200


def slicing(keys: int, groups: int, slices: int = 0) -> tuple[int, int]:
    """(slices, block) of a query's `keys` served by `groups` head blocks: each slice one
    block of at most `block` keys (a power of two, 16..256), `slices` of them (0: the
    largest block that still gives TARGET_CTAS programs, slices x groups, where the keys
    allow). A function of the key count alone: the split, and so the rounding of a token's
    result, is the same whatever the batch."""
    if slices:
        block = tile(-(-keys // slices))
        return slices, block
    share = max(1, keys * groups // TARGET_CTAS)  # keys a slice holds at the target
    block = max(16, min(256, 1 << (share.bit_length() - 1)))  # a power of two at most that
    return -(-keys // block), block


ROPE_ATTRS = ("q_norm", "o_rope", "inline", "eps", "rope_dim", "theta", "yarn")


@template("sparse_attention")
class SparseAttention(Dots):
    dim: int  # d, the head dim (= the kv width)
    heads: int
    window: int
    ratio: int  # 0: window only; 4: CSA (top-k picks); else HCA (every visible entry)
    topk: int  # K picks per token (CSA), else 0
    keys: int  # L, the keys of a query's list: window + picks or compressed entries
    softmax_scale: float
    precision: Precision
    round_probs: bool  # numerics: official with bf16 activations: P in bf16 for P·V
    split: bool = False  # flash-decoding: (token, slice) programs and a combine; else tiles
    slices: int = 0  # split: slices per query (fixed by the key count), else 0
    block_h: int = 0  # heads per program (split: up to SPLIT_HEADS)
    block_n: int = 0  # split: keys of one slice (at most); else keys per online-softmax step
    block_d: int = 0  # split: the chunk of d a dot takes; else d whole
    num_warps: int = 4  # tiles: 8 for wide heads (q, output and a key tile are [., d] fp32)
    # sparse_attention_rope: the RoPE folded around the attention (ir/ops/attention.py)
    q_norm: bool = False  # the weightless per-head q norm + RoPE on the q loaded
    o_rope: bool = False  # the inverse RoPE on the output rows
    inline: bool = False  # the q norm's numerics: official
    eps: float = 0.0  # the q norm's
    rope_dim: int = 0
    theta: float = 0.0
    yarn: tuple[float, int, float, float] | None = None

    @classmethod
    def from_launch(cls, attrs: dict[str, Any], ops: Operands) -> SparseAttention:
        (_, steps, heads, dim), ratio = ops["q"].shape, attrs["ratio"]
        roles = ("q", "kv", "window_cache") + (("compressed",) if ratio else ())
        topk = ops["topk_idx"].shape[-1] if ratio == CSA_RATIO else 0
        keys = attrs["window"] + (topk or (ops["compressed"].shape[1] if ratio else 0))
        what = cls(
            dim=dim, heads=heads, window=attrs["window"], ratio=ratio, topk=topk, keys=keys,
            softmax_scale=attrs["softmax_scale"],
            precision=dot_precision([ops[k].dtype for k in roles]),
            round_probs=bool(attrs.get("round_probs")) and ir_dtype(ops["q"].dtype) == "bf16",
            **{k: attrs[k] for k in ROPE_ATTRS if k in attrs},
        )  # fmt: skip
        return what.form(steps <= SPLIT_STEPS)

    def form(self, split: bool, slices: int = 0) -> SparseAttention:
        """These constants in one form: flash-decoding with `slices` (0: `slicing`'s), or
        large tiles."""
        dim, heads = self.dim, self.heads
        if split:
            block_h = tile(heads, hi=SPLIT_HEADS)
            slices, block = slicing(self.keys, -(-heads // block_h), slices)
            # a [BH, BN] logit tile and [BN, BD] key chunks: narrower chunks for wider slices
            chunk, warps = (128, 4) if block <= 32 else (64, 8)
            blocks = dict(block_h=block_h, block_n=block, block_d=tile(dim, hi=chunk))
            nope, width = dim - self.rope_dim, blocks["block_d"]
            if self.q_norm and nope // width != (dim - 1) // width:
                raise CodegenError(f"sparse_attention_rope: the RoPE channels {nope}..{dim - 1}"
                                   f" span two q chunks of {width}")  # fmt: skip
            update = dict(split=True, slices=slices, num_warps=warps, **blocks)
            return self.model_copy(update=update)
        blocks = dict(
            block_h=tile(heads, hi=16 if dim >= 256 else 32), block_n=16 if dim >= 256 else 32,
            block_d=tile(dim), num_warps=8 if dim >= 256 else 4,
        )  # fmt: skip
        return self.model_copy(update=dict(split=False, slices=0, **blocks))


template("sparse_attention_rope")(SparseAttention)  # the same template, its folds switched on
