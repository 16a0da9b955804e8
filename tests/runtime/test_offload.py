"""Expert offload (`runtime/offload.py`): a plan whose budget keeps most routed experts in the
host store gives the same tokens, bitwise, as the all-resident plan: greedy, sampled with a
seed, and with MTP speculation; on the torch backend and the Triton one (interpreter). The
slot table really routes the reads: the counters see picks of offloaded experts and fetches.
A step with more offloaded experts than slots runs in rounds, with the same bits."""

from __future__ import annotations

import dataclasses
import weakref

import pytest
import torch

from tests.conftest import SPECS
from v4c.budget import GiB, fit, minimum_bytes, routed_experts
from v4c.compile import compile_spec
from v4c.ir.semantics.moe import grouped_swiglu, moe_sort
from v4c.ir.semantics.quant import QuantWeight
from v4c.passes.base import CompileOptions
from v4c.cli.experts import save_profile
from v4c.expert_profile import ExpertProfile
from v4c.runtime.checkpoint.random_weights import as_stored, random_weights
from v4c.runtime.drafting import MtpDrafter
from v4c.runtime.engine import Engine
from v4c.runtime.generate import generate
from v4c.runtime.offload import ExpertStore, _planes, layer_of, offloaded_call
from v4c.ir.weights import WeightFormat
from v4c.runtime.sampler import Sampler
from v4c.spec import load_spec

NEW = 6
PROMPTS = [[(7 * i + 3) % 1024 for i in range(20)], [(11 * i + 5) % 1024 for i in range(9)]]


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("offload")
    (folder / "spec.yaml").write_text("extends: tiny.yaml\nname: tiny-offload\nvocab_size: 1024\n")
    spec = load_spec(folder / "spec.yaml")
    options = CompileOptions(max_batch=2, max_tokens=32, max_seq=64, max_draft=2, dtype="fp32")
    plan = compile_spec(spec, options).plan
    size = max(b for _, b in routed_experts(plan).values())
    budget = fit(plan, (minimum_bytes(plan, spec.moe.top_k) + 3 * size) / GiB, spec.moe.top_k)
    assert sum(len(f.offloaded) for f in budget.layers.values()) == 5 * 8 - 3
    offloaded = dataclasses.replace(plan, offload=budget.to_plan())
    weights = random_weights(spec, seed=5)
    stored = as_stored({n: weights[n] for n in plan.params}, plan.params)
    return plan, offloaded, stored


def _runs(engine, prompts, new):
    """Tokens of greedy, sampled (seeded) and speculative (MTP, 2 drafts) generation."""
    out = []
    for sampler, drafter in ((Sampler(), None), (Sampler(temperature=1.0, seed=3), None),
                             (Sampler(), 2)):  # fmt: skip
        draft = None if drafter is None else MtpDrafter(engine, sampler, drafter)
        result = generate(engine, prompts, sampler, max_new_tokens=new, stop_ids=set(),
                          drafter=draft)  # fmt: skip
        out.append(result.tokens)
    return out


# the interpreter runs the Triton kernels slowly: one prompt, fewer tokens
@pytest.mark.parametrize(
    "backend, prompts, new",
    [("torch", PROMPTS, 6), pytest.param("triton", PROMPTS[1:], 3, marks=pytest.mark.long)],
)
def test_offloaded_plan_gives_the_same_tokens(plans, backend, prompts, new, tmp_path):
    plan, offloaded, stored = plans
    kw = dict(dtype=torch.float32, backend=backend, kernel_root=tmp_path)
    want = _runs(Engine(plan, stored, **kw), prompts, new)
    engine = Engine(offloaded, stored, **kw)
    assert set(engine.offload) == {"layers.0", "layers.1", "layers.2", "layers.3", "mtp.0"}
    assert _runs(engine, prompts, new) == want
    hits, misses, fetched = sum(s.counts for s in engine.offload.values()).tolist()
    # 37 of 40 experts live in the host stores; a copied expert serves at least its pick,
    # and some picks find their expert still in the slot cache from an earlier step
    assert misses >= fetched > 0 and hits > 0
    bank = engine.offload["layers.1"].bank["w1"]
    slots = offloaded.offload["slots"]  # a decode step's picks: 2 rows x 2
    assert slots == 4 and bank.data.shape[0] == len(offloaded.offload["resident"]["layers.1"]) + 4


@pytest.mark.gpu
def test_offloaded_plan_on_cuda_gives_the_same_tokens(plans, tmp_path):
    """On a GPU, decode steps captured as CUDA graphs: the host store pinned, the copy kernel
    reading it in place, the prefetch on its side stream; the tokens of the all-resident
    plan on the same device."""
    plan, offloaded, stored = plans
    kw = dict(device="cuda", dtype=torch.float32, kernel_root=tmp_path)
    want = _runs(Engine(plan, stored, **kw), PROMPTS, NEW)
    engine = Engine(offloaded, stored, **kw)
    assert engine.cuda_graphs and _runs(engine, PROMPTS, NEW) == want
    hits, misses, fetched = sum(s.counts for s in engine.offload.values()).tolist()
    assert hits > 0 and fetched > 0


def test_hash_layer_experts_are_prefetched_exactly(plans, tmp_path):
    """Decode steps after the prompt: layer 1's hash gate picks from the token ids, so the
    prefetch after layer 0's experts copies exactly them and its fetch reads nothing from
    host memory; layer 3's score gate is guessed from layer 2's input, so its fetch still
    reads some (a wrong guess costs copies, never tokens: the test above)."""
    _, offloaded, stored = plans
    engine = Engine(offloaded, stored, dtype=torch.float32, kernel_root=tmp_path)
    engine.reset(1)
    token = engine.forward([PROMPTS[0]]).argmax(-1).tolist()
    for store in engine.offload.values():
        store.counts.zero_()
    for _ in range(6):
        token = engine.forward([token]).argmax(-1).tolist()
    hits, misses, copied = engine.offload["layers.1"].counts.tolist()
    assert (hits + misses, misses) == (6 * 2, 0) and copied > 0
    hits, misses, copied = engine.offload["layers.3"].counts.tolist()
    assert hits + misses == 6 * 2 and copied >= misses


def test_first_hash_layer_is_prefetched_at_the_step_start(plans, tmp_path):
    """Layer 0 has no layer before it to predict it, but its hash gate picks from the token
    ids: the step's start copies its offloaded picks (the copy kernel, in the interpreter
    here) into its slot cache, so the fetch before its experts finds every pick cached
    (no pick served by a copy at the fetch) and the slots hold the experts' host bytes."""
    _, offloaded, stored = plans
    engine = Engine(offloaded, stored, dtype=torch.float32, kernel_root=tmp_path)
    store = engine.offload["layers.0"]
    assert store.kernel  # the copy kernel fills the slots, not the torch gather
    engine.reset(1)
    token = engine.forward([PROMPTS[0]]).argmax(-1).tolist()
    table = stored["layers.0.ffn.gate.tid2eid"]
    copies = 0
    for _ in range(4):
        store.counts.zero_()
        picks = table[token[0]].tolist()
        token = engine.forward([token]).argmax(-1).tolist()
        hits, misses, copied = store.counts.tolist()
        assert (hits, misses) == (2, 0)  # 2 picks a token, none copied at the fetch
        copies += copied
        for e in picks:
            if not store.offloaded[e]:
                continue
            slot = store.cached.tolist().index(e)  # cached: raises if it is not
            for host, slots in store._pairs():
                assert torch.equal(slots[slot], host[store.host_index[e]])
    assert copies > 0  # the picks were offloaded experts, copied by the prefetch


@pytest.mark.parametrize("guess", [True, False])
def test_score_layers_are_guessed_only_when_the_plan_says(plans, tmp_path, guess):
    """`plan.offload["guess"]` (the host-link model's choice, v4c.budget): False keeps the
    prefetch of the hash layers (0 at the step's start, 1 after layer 0) and drops the
    guesses of the score layers (3, after layer 2); the tokens are the same either way."""
    plan, offloaded, stored = plans
    chosen = dataclasses.replace(offloaded, offload={**offloaded.offload, "guess": guess})
    engine = Engine(chosen, stored, dtype=torch.float32, kernel_root=tmp_path)
    calls = {layer: 0 for layer in engine.offload}
    for layer, store in engine.offload.items():

        def counted(store=store, layer=layer, run=store.prefetch):
            calls[layer] += 1
            run()

        store.prefetch = counted
    engine.reset(1)
    token = engine.forward([PROMPTS[0]]).argmax(-1).tolist()
    for _ in range(3):
        token = engine.forward([token]).argmax(-1).tolist()
    assert calls["layers.0"] == calls["layers.1"] == 4  # the prompt's step and 3 decode steps
    assert calls["layers.3"] == (4 if guess else 0)


def test_offloaded_experts_are_read_one_layer_at_a_time(plans, tmp_path):
    """`Engine(experts=...)`, as `v4c run/serve --device-gb` loads: each offloaded layer's
    stacks are read when its store is made and are freed (nothing of them kept: the stores
    hold their own bank and host copies) before the next layer's are read, so the host never
    holds a second copy of every offloaded expert; the tokens are those of the engine given
    every weight at once."""
    plan, offloaded, stored = plans
    layers = list(offloaded.offload["resident"])
    away = {n for n in offloaded.params if layer_of(n) in layers}
    alive, reads = [], []

    def experts(layer: str) -> dict:
        assert all(ref() is None for ref in alive)  # every layer read before: freed
        reads.append(layer)
        out = {n: _fresh(stored[n]) for n in away if layer_of(n) == layer}
        alive.extend(weakref.ref(p) for w in out.values() for p in _planes(w))
        return out

    dense = {n: w for n, w in stored.items() if n not in away}
    kw = dict(dtype=torch.float32, kernel_root=tmp_path)
    engine = Engine(offloaded, dense, experts=experts, **kw)
    assert reads == layers and alive and all(ref() is None for ref in alive)
    want = _greedy(Engine(offloaded, stored, **kw))
    assert _greedy(engine) == want


def _fresh(w):
    """A weight as a checkpoint read gives it: its own tensors."""
    return (
        QuantWeight(w.data.clone(), w.scale.clone(), w.format)
        if isinstance(w, QuantWeight)
        else w.clone()
    )


def _greedy(engine) -> list:
    result = generate(engine, PROMPTS[1:], Sampler(), max_new_tokens=2, stop_ids=set())
    return result.tokens


def test_rounds_when_the_slots_are_fewer_than_the_picked_experts():
    """A prefill step picking 7 offloaded experts through a cache of 2 slots: 4 rounds, each
    filling the rows of its experts; the result is the all-resident one, bit for bit."""
    gen = torch.Generator().manual_seed(0)
    e, d, i, n, k = 8, 64, 32, 12, 2
    dense = {w: torch.randn(e, *s, generator=gen) * 0.1
             for w, s in (("w1", (i, d)), ("w2", (d, i)), ("w3", (i, d)))}  # fmt: skip
    weights = {w: QuantWeight.quantize(t, WeightFormat.fp4(32)) for w, t in dense.items()}
    x = torch.randn(1, n, d, generator=gen)
    idx = torch.stack([torch.randperm(e, generator=gen)[:k] for _ in range(n)]).view(1, n, k)
    routing = torch.rand(1, n, k, generator=gen)
    order, offsets = moe_sort(idx.view(-1, k), e)
    order = order.view(1, n, k)
    full = [weights[w].dequantize(torch.float32) for w in ("w1", "w2", "w3")]
    want = grouped_swiglu(x.view(n, d), order.view(-1), offsets, routing.view(n, k), *full,
                          limit=7.0).view(1, n, k, d)  # fmt: skip
    store = ExpertStore(weights, [3], cache=2, device=torch.device("cpu"))
    out = torch.full_like(want, float("nan"))
    op = type("Op", (), {"limit": 7.0, "act_quant": False})
    offloaded_call(store, op, [x, order, offsets, routing], out)()
    picked = [x for x in range(e) if x != 3 and offsets[x + 1] > offsets[x]]
    assert len(picked) == 7 and store.rounds(offsets, n * k) == 4
    assert torch.equal(out, want)
    hits, misses, fetched = store.counts.tolist()
    assert (hits + misses, fetched) == (n * k, 7)


def test_recorded_profile_round_trip(plans, tmp_path):
    """`record_experts` counts every pick: K per token per layer, over prefill and decode;
    the profile written from it reads back the same and chooses the residents."""
    plan, _, stored = plans
    engine = Engine(plan, stored, dtype=torch.float32)
    picks = engine.record_experts()
    generate(engine, [PROMPTS[1]], Sampler(), max_new_tokens=3, stop_ids=set())
    fed = len(PROMPTS[1]) + 2  # the prompt, then two tokens fed back
    main = {k: v for k, v in picks.items() if not k.startswith("mtp.")}
    assert len(main) == 4 and all(int(v.sum()) == 2 * fed for v in main.values())
    path = tmp_path / "profile.json"
    save_profile(path, plan.spec, picks)
    profile = ExpertProfile.load(path, plan.spec)
    assert profile.picks == {k: v.tolist() for k, v in picks.items()}
    size = max(b for _, b in routed_experts(plan).values())
    budget = (minimum_bytes(plan, 2) + 4 * size) / GiB
    chosen = fit(plan, budget, 2, profile).layers
    share = {k: profile.share(k, 8) or [1 / 8] * 8 for k in chosen}  # mtp.0: never routed
    kept = [share[k][e] for k, f in chosen.items() for e in f.resident]
    dropped = [share[k][e] for k, f in chosen.items() for e in f.offloaded]
    assert len(kept) == 4 and min(kept) >= max(dropped)  # the hottest, whatever the layer


@pytest.mark.long
def test_flash_slice_offloaded_gives_the_same_tokens(tmp_path):
    """The Flash slice at real dims (vocabulary cut to 1024), 16 experts a layer of which 12
    live in the host store: greedy and seeded sampled tokens as with every expert resident."""
    (tmp_path / "slice.yaml").write_text(
        f"extends: {SPECS / 'variants' / 'flash-2l-slice.yaml'}\nname: slice\nvocab_size: 1024\n"
    )
    spec = load_spec(tmp_path / "slice.yaml")
    options = CompileOptions(max_batch=1, max_tokens=8, max_seq=16, max_draft=0, dtype="fp32")
    plan = compile_spec(spec, options).plan
    size = max(b for _, b in routed_experts(plan).values())
    budget = fit(plan, (minimum_bytes(plan, spec.moe.top_k) + 8 * size) / GiB, spec.moe.top_k)
    assert [len(f.resident) for f in budget.layers.values()] == [4, 4]
    weights = random_weights(spec, seed=2)
    stored = as_stored({n: weights.pop(n) for n in plan.params}, plan.params)
    prompt = [[(5 * i + 1) % 1024 for i in range(8)]]
    tokens = []
    for p in (plan, dataclasses.replace(plan, offload=budget.to_plan())):
        engine = Engine(p, stored, dtype=torch.float32)
        tokens.append([generate(engine, prompt, sampler, max_new_tokens=3, stop_ids=set()).tokens
                       for sampler in (Sampler(), Sampler(temperature=1.0, seed=7))])  # fmt: skip
    assert tokens[0] == tokens[1]
    assert sum(int(s.counts[1]) for s in engine.offload.values()) > 0  # picks read from host
