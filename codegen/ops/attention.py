"""Parameters of the attention template: sparse attention with a sink (the grouped output
projection is a GEMM, `codegen/ops/gemm.py`). Block sizes come from the dims; `tl.dot` needs
at least 16 on every side, so small head counts and row blocks are padded up to 16 and masked.

Sparse attention cuts a query's keys into slices fixed by the key count (`slicing`) and has
two forms, chosen by the launch's tokens per row at the plan's limits: flash-decoding for a
step of a few (decode, verify: (token, slice) programs, a scratch and a combine) and, for a
prefill, one program per token that folds the same slices in the combine's order in
registers. Both compute a token's output with the same operations (kernels/attention.py), so
a token prefilled, verified or decoded gets the same bits. Both fold the RoPE of
`sparse_attention_rope` around the attention when it asks."""

from __future__ import annotations

from typing import Any

from v4c.codegen.jit import CodegenError
from v4c.codegen.params import Dots, Operands, Precision, dot_precision, template, tile
from v4c.ir.types import ir_dtype
from v4c.spec.schema import CSA_RATIO


SPLIT_STEPS = 16  # a step of at most this many tokens a row (decode, verify) splits its keys
SPLIT_HEADS = 16  # heads a program serves (the dots' M: 16 is tl.dot's least)
FOLD_KEYS = 64  # the widest slice a prefill program folds in registers: its [keys, d] key
# tile feeds a full-width p·k (wider: the prefill runs the split form, in passes)
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
    split: bool = False  # flash-decoding: (token, slice) programs and a combine; else a
    # program per token folding its slices
    slices: int = 0  # slices per query (fixed by the key count)
    block_h: int = 0  # heads per program (up to SPLIT_HEADS)
    block_n: int = 0  # keys of one slice (at most)
    block_d: int = 0  # the chunk of d a q·k dot takes (and split: a p·k dot)
    num_warps: int = 4
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
        """These constants with `slices` (0: `slicing`'s), in flash-decoding or, when `split`
        is False and a slice fits a prefill program (FOLD_KEYS), the prefill form."""
        dim, heads = self.dim, self.heads
        block_h = tile(heads, hi=SPLIT_HEADS)
        slices, block = slicing(self.keys, -(-heads // block_h), slices)
        # a [BH, BN] logit tile and [BN, BD] key chunks: narrower chunks for wider slices
        chunk, warps = (128, 4) if block <= 32 else (64, 8)
        blocks = dict(block_h=block_h, block_n=block, block_d=tile(dim, hi=chunk))
        nope, width = dim - self.rope_dim, blocks["block_d"]
        if self.q_norm and nope // width != (dim - 1) // width:
            raise CodegenError(f"sparse_attention_rope: the RoPE channels {nope}..{dim - 1}"
                               f" span two q chunks of {width}")  # fmt: skip
        split = split or block > FOLD_KEYS
        if not split:  # the folded state and a slice's p·k are [BH, d] fp32: 8 warps if wide
            warps = 8 if dim >= 256 else 4
        return self.model_copy(update=dict(split=split, slices=slices, num_warps=warps, **blocks))


template("sparse_attention_rope")(SparseAttention)  # the same template, its folds switched on
