"""simulate_numerics: with `numerics: official`, the activation rounding the official code
simulates (V4_REFERENCE §12) becomes part of the graph, so the plan computes what the
official model computes; with `plain` (the default) the pass changes nothing.

- every linear whose checkpoint weight is FP8 rounds its input to FP8 (128-wide blocks,
  power-of-two scales, `act_quant`): the W8A8 GEMM quantises in its prologue;
- the attention kv's non-RoPE dims are rounded to FP8 (64-wide blocks);
- the main compressor rounds the non-RoPE dims of its new entries to FP8, the indexer's
  compressor Hadamard-rotates and rounds its new keys to FP4 (32-wide blocks);
- the indexer rounds its wq_b input to FP8 and its q (Hadamard) to FP4;
- the experts (FP4 routed, FP8 shared) round the inputs of their GEMMs to FP8;
- with bf16 activations, the official bf16 rounding points (§12.1) inside the ops that
  compute in fp32 otherwise: the indexer's q, head weights and scores, the experts' w1/w3
  outputs, the attention probabilities before P·V, the Hadamard of the indexer's keys, and
  the weightless per-head q norm, which the official code computes op by op in bf16.
wo_a is used dequantised in bf16 by the official code and keeps its input; routing, HC,
compressor pooling, the weighted norms and RoPE are fp32 in both modes.

Each switch set here is an op's `rounding_attrs` entry, which the pass manager checks no
later pass drops (`passes.roundings`).
"""

from __future__ import annotations

from dataclasses import replace

from v4c.ir.graph import Graph, Value
from v4c.ir.ops.core import QuantSim
from v4c.ir.roles import CompressorRole
from v4c.ir.weights import stored_format
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.spec.tensors import checkpoint_tensors

NAME = "simulate_numerics"
FLAGS = {
    "moe": "act_quant",
    "swiglu": "act_quant",
    "grouped_swiglu": "act_quant",
    "indexer_topk": "sim",
    "indexer_score": "sim",
}
Q_NORMS = ("rms_norm", "rms_norm_rope")  # the weightless one is the per-head q norm


def _quantise_input(graph: Graph, value: Value, users: list[str], block: int, dims: int) -> None:
    suffix = f"_{value.index}" if value.index else ""
    id = f"{value.node}{suffix}.fp8"
    if id not in graph:
        graph.add(
            id,
            QuantSim(block, dims),
            [value],
            layer=graph.node(value.node).layer,
            origin=(NAME, (value.node,)),
        )
    for user in users:
        graph.replace_uses(value, Value(id), only={user})


@register_pass(NAME)
def simulate_numerics(graph: Graph, ctx: PassContext) -> PassResult:
    if ctx.options.numerics != "official":
        return PassResult(False, {})
    quant = ctx.spec.quant
    fp8 = {t.name for t in checkpoint_tensors(ctx.spec)
           if stored_format(t.storage, t.dtype, quant).kind == "fp8"}  # fmt: skip
    stats = {"fp8_gemm_inputs": 0, "kv": 0, "compressors": 0, "flags": 0, "q_norms": 0}
    nope = ctx.spec.attention.head_dim - ctx.spec.attention.rope_head_dim
    for node in graph.nodes():
        op, operands = node.op, graph.operands(node.id)
        if op.kind == "linear" and graph.node(operands[1].node).op.tensor in fp8:
            graph.set_op(node.id, replace(op, act_quant=True))
            stats["fp8_gemm_inputs"] += 1
        elif op.kind == "sparse_attention":
            _quantise_input(graph, operands[1], [node.id], block=64, dims=nope)
            graph.set_op(node.id, replace(op, round_probs=True))
            stats["kv"] += 1
        elif op.kind in Q_NORMS and not op.weighted:
            graph.set_op(node.id, replace(op, inline=True))
            stats["q_norms"] += 1
        elif op.kind == "compressor":
            sim = "fp4" if op.role == CompressorRole.INDEXER else "fp8"
            graph.set_op(node.id, replace(op, sim=sim))
            stats["compressors"] += 1
        elif op.kind in FLAGS:
            graph.set_op(node.id, replace(op, **{FLAGS[op.kind]: True}))
            stats["flags"] += 1
    return PassResult(True, stats)
