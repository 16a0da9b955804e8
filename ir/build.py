"""`build(spec)`: the whole model (main layers, then the MTP blocks) as one step graph.

The graph computes one step of B sequences, T new tokens each, starting at `positions`:
a prefill (T tokens) and a decode step (T = 1) are the same graph with T resolved
differently. The caches hold N sequences (a leading dim of their own); `slots` [B] names the
cache row of each of the step's rows, so a step over any subset of the sequences reads and
writes their rows in place. Node ids follow the spec: `L03.attn.wq_a`, `L03.ffn.moe`,
`M00.e_proj` (MTP), `w.<checkpoint name>` (params), `cache.L03.window` (states), `in.ids`,
`in.slots`, `out.logits`. Ids are labels: what a pass must tell apart among ops of one kind
is the op's role (`v4c.ir.roles`), set here from the spec's structure.

The MTP blocks are a component of their own: they read the main model's last-block streams
from the `hidden` input (what the main model gives as its `hidden` output), so the draft
entry point runs them alone, fed a verify step's hidden states or their own `mtp_hidden`
when drafts are chained (V4_REFERENCE §11).
"""

from __future__ import annotations

from v4c.ir.graph import Graph, Value
from v4c.ir.op import Op
from v4c.ir.ops.attention import SparseAttention
from v4c.ir.ops.compressor import Compressor
from v4c.ir.ops.core import Add, Embed, Input, Output, Param, SplitHeads, State
from v4c.ir.ops.gemm import GroupedLinear, Linear
from v4c.ir.ops.hc import HcExpand, HcHead, HcPost, HcPre
from v4c.ir.ops.indexer import IndexerTopk
from v4c.ir.ops.moe import Moe, Swiglu
from v4c.ir.ops.norm import RmsNorm
from v4c.ir.ops.rope import Rope
from v4c.ir.roles import CompressorRole as C
from v4c.ir.roles import Projection as P
from v4c.spec import LayerInfo, ModelSpec, layer_table
from v4c.spec.schema import CSA_RATIO, coff
from v4c.spec.tensors import checkpoint_tensors

BT = ("B", "T")


def build(spec: ModelSpec) -> Graph:
    return _Builder(spec).graph


class _Builder:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.graph = Graph(spec.name)
        self.graph.meta["spec"] = spec.name
        self.tensors = {t.name: t for t in checkpoint_tensors(spec)}
        self.ids = self.source("in.ids", Input(BT, "i64", key="ids"))
        self.pos = self.source("in.positions", Input(BT, "i64", key="positions"))
        self.slots = self.source("in.slots", Input(("B",), "i64", key="slots"))
        rows = layer_table(spec)
        h = self.add("embed", Embed(), [self.ids, self.param("embed.weight")])
        X = self.add("hc_expand", HcExpand(spec.hc.mult), [h])
        for row in rows[: spec.num_layers]:
            X = self.block(row, X, f"L{row.index:02d}", f"layers.{row.index}.")
        self.head(X, "head", "", "norm.weight", "logits")
        mtp = rows[spec.num_layers :]
        if not mtp:
            return
        self.graph.add("out.hidden", Output(key="hidden"), [X])
        streams = ("B", "T", spec.hc.mult, spec.hidden_size)
        X = self.source("in.hidden", Input(streams, "bf16", key="hidden"))
        mtp_ids = self.source("in.mtp_ids", Input(BT, "i64", key="mtp_ids"))
        for row in mtp:
            k = row.index - spec.num_layers
            X = self.mtp(row, X, mtp_ids, f"M{k:02d}", f"mtp.{k}.")
        self.graph.add("out.mtp_hidden", Output(key="mtp_hidden"), [X])

    # -- nodes ----------------------------------------------------------------------------

    def add(self, id: str, op: Op, operands: list[Value], layer: int | None = None) -> Value:
        return self.graph.add(id, op, operands, layer=layer).out()

    def outs(self, id: str, op: Op, operands: list[Value], layer: int | None) -> list[Value]:
        node = self.graph.add(id, op, operands, layer=layer)
        return [node.out(i) for i in range(len(node.types))]

    def source(self, id: str, op: Op) -> Value:
        return self.graph.add(id, op, []).out()

    def param(self, name: str) -> Value:
        id = "w." + name.replace("{e}", "E")
        if id not in self.graph:
            t = self.tensors[name]
            shape = ((t.stack,) if t.stack else ()) + t.shape
            self.source(id, Param(shape, t.dtype, tensor=name, stack=t.stack))
        return Value(id)

    def state(self, key: str, shape: tuple, dtype: str, fill: str = "zeros") -> Value:
        return self.source(f"cache.{key}", State(shape, dtype, key=key, fill=fill))

    # -- structure ------------------------------------------------------------------------

    def block(self, row: LayerInfo, X: Value, p: str, w: str) -> Value:
        hc, i = self.spec.hc, row.index
        for site, sublayer in (("attn", self.attention), ("ffn", self.ffn)):
            hc_w = [self.param(f"{w}hc_{site}_{k}") for k in ("fn", "base", "scale")]
            pre = HcPre(hc.sinkhorn_iters, hc.eps, self.spec.norm_eps)
            x, post, comb = self.outs(f"{p}.{site}.hc_pre", pre, [X, *hc_w], i)
            norm = RmsNorm(self.spec.norm_eps)
            x = self.add(f"{p}.{site}_norm", norm, [x, self.param(f"{w}{site}_norm.weight")], i)
            out = sublayer(row, x, p, w)
            X = self.add(f"{p}.{site}.hc_post", HcPost(), [out, X, post, comb], i)
        return X

    def head(self, X: Value, p: str, w: str, norm: str, key: str) -> None:
        hc = self.spec.hc
        hc_w = [self.param(f"{w}hc_head_{k}") for k in ("fn", "base", "scale")]
        y = self.add(f"{p}.hc_head", HcHead(hc.eps, self.spec.norm_eps), [X, *hc_w])
        y = self.add(f"{p}.norm", RmsNorm(self.spec.norm_eps), [y, self.param(norm)])
        logits = self.add(
            f"{p}.lm_head", Linear("fp32", role=P.LM_HEAD), [y, self.param("head.weight")]
        )
        self.graph.add(f"out.{key}", Output(key=key), [logits])

    def mtp(self, row: LayerInfo, X: Value, ids: Value, p: str, w: str) -> Value:
        """MTP block: embed(next tokens) and the streams before it (the main model's, or the
        previous MTP block's) -> one more block."""
        eps, i = self.spec.norm_eps, row.index
        e = self.add(f"{p}.embed", Embed(), [ids, self.param("embed.weight")], i)
        e = self.add(f"{p}.enorm", RmsNorm(eps), [e, self.param(f"{w}enorm.weight")], i)
        e = self.add(f"{p}.e_proj", Linear(role=P.E_PROJ), [e, self.param(f"{w}e_proj.weight")], i)
        e = self.add(f"{p}.e_expand", HcExpand(self.spec.hc.mult), [e], i)
        h = self.add(f"{p}.hnorm", RmsNorm(eps), [X, self.param(f"{w}hnorm.weight")], i)
        h = self.add(f"{p}.h_proj", Linear(role=P.H_PROJ), [h, self.param(f"{w}h_proj.weight")], i)
        X = self.add(f"{p}.input", Add(), [e, h], i)
        X = self.block(row, X, p, w)
        key = "mtp_logits" if p == "M00" else f"mtp{p[1:]}_logits"
        self.head(X, p, w, f"{w}norm.weight", key)
        return X

    def rope(self, row: LayerInfo) -> dict:
        r = self.spec.rope
        yarn = r.yarn
        return dict(
            rope_dim=self.spec.attention.rope_head_dim,
            theta=row.rope_theta,
            yarn=(
                yarn.factor,
                yarn.original_max_position_embeddings,
                yarn.beta_fast,
                yarn.beta_slow,
            )
            if row.yarn and yarn is not None
            else None,
        )

    def attention(self, row: LayerInfo, x: Value, p: str, w: str) -> Value:
        a, eps, i, pos = self.spec.attention, self.spec.norm_eps, row.index, self.pos
        at, q = f"{w}attn.", f"{p}.attn"
        qr = self.add(f"{q}.wq_a", Linear(role=P.Q_A), [x, self.param(f"{at}wq_a.weight")], i)
        qr = self.add(f"{q}.q_norm", RmsNorm(eps), [qr, self.param(f"{at}q_norm.weight")], i)
        qh = self.add(f"{q}.wq_b", Linear(role=P.Q_B), [qr, self.param(f"{at}wq_b.weight")], i)
        qh = self.add(f"{q}.q_heads", SplitHeads(a.num_heads), [qh], i)
        qh = self.add(f"{q}.q_head_norm", RmsNorm(eps, weighted=False), [qh], i)
        qh = self.add(f"{q}.q_rope", Rope(**self.rope(row)), [qh, pos], i)
        kv = self.add(f"{q}.wkv", Linear(role=P.KV), [x, self.param(f"{at}wkv.weight")], i)
        kv = self.add(f"{q}.kv_norm", RmsNorm(eps), [kv, self.param(f"{at}kv_norm.weight")], i)
        kv = self.add(f"{q}.kv_rope", Rope(**self.rope(row)), [kv, pos], i)
        window = self.state(f"{p}.window", ("N", a.sliding_window, a.head_dim), "bf16")
        operands = [qh, kv, pos, self.slots, self.param(f"{at}attn_sink"), window]
        if row.compress_ratio:
            operands.append(self.compressor(row, x, q, at, C.ATTENTION))
        if row.has_indexer:
            keys = self.compressor(row, x, q, at, C.INDEXER)
            ix_w = {k: self.param(f"{at}indexer.{k}.weight") for k in ("wq_b", "weights_proj")}
            iq, iw = (  # the indexer's projections are the plan's GEMMs like any other
                self.add(f"{q}.indexer.{k}", Linear(role=role), [v, ix_w[k]], i)
                for k, v, role in (
                    ("wq_b", qr, P.INDEXER_Q),
                    ("weights_proj", x, P.INDEXER_WEIGHTS),
                )
            )
            ix = IndexerTopk(**self.rope(row), topk=a.indexer.topk, ratio=row.compress_ratio)
            operands.append(self.add(f"{q}.indexer", ix, [iq, iw, pos, self.slots, keys], i))
        core = SparseAttention(row.compress_ratio, a.sliding_window, a.head_dim**-0.5)
        o = self.add(f"{q}.core", core, operands, i)
        o = self.add(f"{q}.o_rope_inv", Rope(**self.rope(row), inverse=True), [o, pos], i)
        o = self.add(f"{q}.wo_a", GroupedLinear(a.o_groups), [o, self.param(f"{at}wo_a.weight")], i)
        return self.add(f"{q}.wo_b", Linear(role=P.O_B), [o, self.param(f"{at}wo_b.weight")], i)

    def compressor(self, row: LayerInfo, x: Value, q: str, at: str, role: C) -> Value:
        """The attention's compressor fills its cache (head_dim wide) at the layer's ratio;
        the indexer's fills its keys (the indexer's head_dim) at the CSA ratio (§7)."""
        a = self.spec.attention
        if role == C.ATTENTION:
            id, w, m, c = f"{q}.compressor", f"{at}compressor.", row.compress_ratio, a.head_dim
        else:
            id, w = f"{q}.indexer.compressor", f"{at}indexer.compressor."
            m, c = CSA_RATIO, a.indexer.head_dim
        state = ("N", coff(m) * m, coff(m) * c)
        key = id.removesuffix(".compressor").replace(".attn", "")
        kv = self.state(f"{key}.compressor_kv", state, "fp32")
        score = self.state(f"{key}.compressor_score", state, "fp32", "-inf")
        cache = self.state(f"{key}.compressed", ("N", f"S/{m}", c), "bf16")
        k, z = (  # fp32 projections, as the official compressor computes them (§6.1)
            self.add(
                f"{id}.{p}", Linear("fp32", role=r), [x, self.param(f"{w}{p}.weight")], row.index
            )
            for p, r in (("wkv", P.COMPRESSOR_KV), ("wgate", P.COMPRESSOR_GATE))
        )
        weights = [self.param(f"{w}{k}") for k in ("ape", "norm.weight")]
        op = Compressor(**self.rope(row), ratio=m, eps=self.spec.norm_eps, role=role)
        operands = [k, z, self.pos, self.slots, *weights, kv, score, cache]
        return self.add(id, op, operands, row.index)

    def ffn(self, row: LayerInfo, x: Value, p: str, w: str) -> Value:
        moe, i, f = self.spec.moe, row.index, f"{w}ffn."
        if row.gate == "hash":
            gate = [x, self.ids, self.param(f"{f}gate.weight"), self.param(f"{f}gate.tid2eid")]
        else:
            gate = [x, self.param(f"{f}gate.weight"), self.param(f"{f}gate.bias")]
        experts = [self.param(f"{f}experts.{{e}}.{k}.weight") for k in ("w1", "w2", "w3")]
        op = Moe(
            row.gate,
            moe.top_k,
            moe.routed_scaling_factor,
            moe.scoring_func,
            moe.norm_topk_prob,
            moe.swiglu_limit,
        )
        out = self.add(f"{p}.ffn.moe", op, gate + experts, i)
        for s in range(moe.num_shared_experts):
            sp = f"{f}shared_experts." if moe.num_shared_experts == 1 else f"{f}shared_experts.{s}."
            ws = [self.param(f"{sp}{k}.weight") for k in ("w1", "w2", "w3")]
            shared = self.add(f"{p}.ffn.shared{s}", Swiglu(moe.swiglu_limit), [x, *ws], i)
            out = self.add(f"{p}.ffn.out{s}", Add(), [out, shared], i)
        return out
