"""shard: the graph of one rank of a TP × EP grid (`CompileOptions.tp`, `.ep`), with the
communication as collective ops. One graph serves every rank: its shapes are one rank's
(heads H/tp, experts E/ep, ...), each split param records which piece of its checkpoint
tensor it holds, and what differs between ranks comes from the grid at run time (the
piece a rank loads, `shard_start`). No-op on one process (tp = ep = 1).

The grid (`v4c.spec.parallel`): rank = ep_index * tp + tp_index, so the TP groups are
consecutive ranks inside each EP slot (the per-layer TP all-reduces stay among
neighbouring GPUs), an EP group is one rank of each TP group, and `world` is everyone.
What a rank holds and computes follows the official code's splits (V4_REFERENCE §13.3:
wq_b, wo_a, attn_sink, weights_proj, w1, w3 on dim 0, wo_b, w2 on dim 1, experts by index,
embed and head by vocabulary rows) and its collectives, with one difference of axes: the
official code has one (all its ranks split the heads and the experts alike); here the heads
follow tp, the experts ep and tp, so a grid may keep the attention's all-reduces in a node:

- attention, over tp: its H/tp heads (wq_b rows, attn_sink, the o-groups of those heads:
  wo_a rows) and wo_b's matching columns, whose partial sums an all_reduce(tp) adds. The
  single KV head, the compressors and every cache are computed and held whole by each rank
  (one head of 512: small, and the official code does the same);
- the indexer, over tp: its heads' wq_b rows and weights_proj rows; each rank's partial
  scores (scaled by all the heads) are summed by an all_reduce(tp) before the top-k;
- routed experts: over ep, experts [e*E/ep, (e+1)*E/ep) (routing is computed whole on every
  rank: the gate is small; picks of another rank's experts weigh 0 here), and over tp each
  expert's inner dim (w1/w3 rows, w2 columns);
- the shared expert's inner dim over world, its partial output added to the routed
  experts' before one all_reduce(world) per MoE layer (the official code keeps the shared
  expert whole on every rank and all-reduces the fp32 routed sum alone; split, no rank
  holds all of it, and one collective does; in bf16 the rank's partial sum is rounded
  once before the reduction);
- embedding rows over world (masked lookups, all_reduce(world)) and lm_head rows over
  world (each rank's vocabulary piece of the logits, all_gather(world)).
With tp = 1 (experts split only) the attention runs whole on every rank.

Runs after select_outputs/dce (no split of what will not run) and before
simulate_numerics, the fusions and schedule_moe: those see the rank's graph, so the
roundings land on the split ops, no fusion reaches across a collective, and the MoE
schedule is sized for the rank's experts.
"""

from __future__ import annotations

from dataclasses import replace

from v4c.errors import IRError
from v4c.ir.graph import Graph, Node, Value
from v4c.ir.op import Op
from v4c.ir.ops.collective import AllGather, AllReduce, ShardStart
from v4c.ir.ops.core import MaskedEmbed
from v4c.ir.ops.indexer import IndexerScore, IndexerSelect
from v4c.ir.roles import Projection
from v4c.passes.base import PassContext, PassResult, register_pass
from v4c.spec import ModelSpec
from v4c.spec.parallel import Grid, Split, grid_problems, local_shape

NAME = "shard"
# The pieces of a param a rank holds, by the op that reads it: (kind, role, operand role) ->
# (dim, axis) per split, the role a linear's projection (`v4c.ir.roles`), "" for other kinds.
_SPLITS: dict[tuple[str, str, str], tuple[tuple[int, str], ...]] = {
    ("linear", Projection.Q_B, "weight"): ((0, "tp"),),
    ("linear", Projection.O_B, "weight"): ((1, "tp"),),
    ("linear", Projection.INDEXER_Q, "weight"): ((0, "tp"),),
    ("linear", Projection.INDEXER_WEIGHTS, "weight"): ((0, "tp"),),
    ("grouped_linear", "", "weight"): ((0, "tp"),),  # wo_a: the o-groups of the rank's heads
    ("sparse_attention", "", "sink"): ((0, "tp"),),
    ("embed", "", "weight"): ((0, "world"),),
    ("linear", Projection.LM_HEAD, "weight"): ((0, "world"),),
    ("moe", "", "w1"): ((0, "ep"), (1, "tp")),  # [E, I, D]: experts over ep, I over tp
    ("moe", "", "w3"): ((0, "ep"), (1, "tp")),
    ("moe", "", "w2"): ((0, "ep"), (2, "tp")),  # [E, D, I]
    ("swiglu", "", "w1"): ((0, "world"),),  # the shared expert's inner dim
    ("swiglu", "", "w3"): ((0, "world"),),
    ("swiglu", "", "w2"): ((1, "world"),),
}


def param_splits(graph: Graph, grid: Grid) -> dict[str, tuple[Split, ...]]:
    """The pieces of each split param (by node id; routed experts: the [E, ...] stack),
    from the ops that read it; a param read under two rules is an error."""
    sizes = {"tp": grid.tp, "ep": grid.ep, "world": grid.world}
    found: dict[str, tuple[Split, ...]] = {}
    for node in graph.nodes():
        reader = (node.op.kind, getattr(node.op, "role", ""))
        for role, value in zip(node.op.operand_roles(), graph.operands(node.id)):
            rule = _SPLITS.get((*reader, role))
            if rule is None or graph.node(value.node).op.source != "param":
                continue
            splits = tuple((dim, sizes[axis], axis) for dim, axis in rule if sizes[axis] > 1)
            if found.setdefault(value.node, splits) != splits:
                raise IRError(f"{value.node} is read as {found[value.node]} and as {splits}")
    return {id: splits for id, splits in found.items() if splits}


class _Sharder:
    def __init__(self, graph: Graph, spec: ModelSpec, grid: Grid) -> None:
        self.graph, self.spec, self.grid = graph, spec, grid
        self.splits = param_splits(graph, grid)
        self.stats = {"params": 0, "all_reduce": 0, "all_gather": 0, "rewritten": 0}

    def run(self) -> None:
        rules = {
            "param": self.param, "split_heads": self.heads, "grouped_linear": self.groups,
            "indexer_topk": self.indexer, "linear": self.linear, "embed": self.embed,
            "moe": self.moe, "hc_post": self.hc_post,
        }  # fmt: skip
        for id in self.graph.toposort():
            node = self.graph.node(id)
            rule = rules.get(node.op.kind)
            if rule is None or not rule(node):
                if not node.op.source:
                    self.graph.retype(id)

    # -- helpers ----------------------------------------------------------------------------

    def made(self, id: str, op: Op, operands: list[Value], near: Node) -> Value:
        """A node this pass adds for `near`, with `near`'s layer and origin."""
        node = self.graph.add(id, op, operands, layer=near.layer, origin=(NAME, (near.id,)))
        return node.out(0)

    def after(self, value: Value, op: Op, users: set[str] | None = None) -> Value:
        """`op` (a collective) applied to `value`, read by `value`'s users (or `users`)."""
        near = self.graph.node(value.node)
        if users is None:
            users = {u for u, _, out in self.graph.users(value.node) if out == value.index}
        out = self.made(f"{value.node}.{op.kind}", op, [value], near)
        for user in users:
            self.graph.replace_uses(value, out, only={user})
        self.stats[op.kind] += 1
        return out

    def rewrite(self, node: Node, op: Op, operands: list[Value] | None = None) -> bool:
        self.graph.replace_op(node.id, op, operands)
        self.stats["rewritten"] += 1
        return True

    # -- rules: each returns True when it has set the node's op and types --------------------

    def param(self, node: Node) -> bool:
        splits = self.splits.get(node.id)
        if not splits:
            return True
        shape = local_shape(tuple(node.op.shape), splits)
        self.graph.replace_op(node.id, replace(node.op, shape=shape, split=splits))
        self.stats["params"] += 1
        return True

    def heads(self, node: Node) -> bool:
        if self.grid.tp == 1:
            return False
        return self.rewrite(node, replace(node.op, heads=node.op.heads // self.grid.tp))

    def groups(self, node: Node) -> bool:
        if self.grid.tp == 1:
            return False
        return self.rewrite(node, replace(node.op, groups=node.op.groups // self.grid.tp))

    def indexer(self, node: Node) -> bool:
        """indexer_topk -> indexer_score (this rank's heads) -> all_reduce(tp) -> select."""
        if self.grid.tp == 1:
            return False
        op, operands = node.op, self.graph.operands(node.id)
        heads = self.spec.attention.indexer.num_heads
        score = IndexerScore(op.rope_dim, op.theta, op.yarn, heads=heads, sim=op.sim)
        scores = self.made(f"{node.id}.scores", score, operands, node)
        total = self.after(scores, AllReduce("tp"))
        return self.rewrite(node, IndexerSelect(op.topk, op.ratio), [total, operands[2]])

    def linear(self, node: Node) -> bool:
        self.graph.retype(node.id)
        if node.op.role == Projection.O_B and self.grid.tp > 1:
            self.after(node.out(0), AllReduce("tp"))
        elif node.op.role == Projection.LM_HEAD and self.grid.world > 1:
            self.after(node.out(0), AllGather("world", -1, self.grid.world))
        return True

    def embed(self, node: Node) -> bool:
        world = self.grid.world
        if world == 1:
            return False
        ids, weight = self.graph.operands(node.id)
        rows = self.spec.vocab_size // world
        first = self.made(f"{node.id}.first", ShardStart("world", rows), [], node)
        self.rewrite(node, MaskedEmbed(), [ids, weight, first])
        self.after(node.out(0), AllReduce("world"))
        return True

    def moe(self, node: Node) -> bool:
        if self.grid.ep == 1:
            return False
        operands = self.graph.operands(node.id)
        local = self.spec.moe.num_experts // self.grid.ep
        first = self.made(f"{node.id}.first", ShardStart("ep", local), [], node)
        operands = operands[:-3] + [first] + operands[-3:]
        return self.rewrite(node, replace(node.op, local_experts=local), operands)

    def hc_post(self, node: Node) -> bool:
        """The MoE sublayer's output (the routed experts plus the shared ones) is a partial
        sum on every rank once anything in it is split: one all_reduce(world) before the
        residual takes it."""
        out = self.graph.operands(node.id)[0]
        if self.grid.world > 1 and self.graph.node(out.node).op.kind in ("moe", "add"):
            self.after(out, AllReduce("world"), users={node.id})
        self.graph.retype(node.id)
        return True


@register_pass(NAME)
def shard(graph: Graph, ctx: PassContext) -> PassResult:
    grid = Grid(ctx.options.tp, ctx.options.ep)
    if grid.world == 1:
        return PassResult(False, {})
    problems = grid_problems(ctx.spec, grid.tp, grid.ep)
    if problems:
        raise IRError(f"tp={grid.tp} x ep={grid.ep}: " + "; ".join(problems))
    sharder = _Sharder(graph, ctx.spec, grid)
    sharder.run()
    return PassResult(True, sharder.stats)
