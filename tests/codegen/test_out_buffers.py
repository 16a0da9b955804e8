"""Every template writes into the buffers it is handed: `run(*operands, out=bufs)` gives, bit
for bit, what `run(*operands)` gives, returns the tensors handed in, updates its caches the
same way, and reads no device value on the host (a CUDA graph must be able to capture it).

The operands are those each launch of the tiny model's decode entry sees (two rows, one at a
ratio-128 boundary, caches filled with random values): the reference semantics run the
entry launch by launch, and each generated launch is checked on copies of its operands. Two
plans cover every template: the default one (HC, RMSNorm and RoPE fused; experts FP4/FP8 as
stored) and one without fuse_hc_norm and fuse_moe_route, with the MTP block (hc_pre, hc_post,
hc_head, add; moe_gate and moe_sort apart)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.helpers.dispatch import DispatchCounter
from tests.small_vocab import small_vocab
from v4c.codegen.params import load_templates
from v4c.compile import compile_spec
from v4c.ir.semantics.quant import QuantWeight
from v4c.passes.base import CompileOptions
from v4c.runtime.engine import Engine
from v4c.runtime.checkpoint.random_weights import as_stored, random_weights

POSITIONS = (127, 18)  # row 0 completes a ratio-128 and a ratio-4 entry; row 1 neither
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: the interpreter


def garbage(like: torch.Tensor) -> torch.Tensor:
    """A buffer of `like`'s shape and dtype holding values no kernel writes (what an arena
    view holds from an earlier launch): any element the kernel skips shows."""
    fill = float("nan") if like.dtype.is_floating_point else -7
    return torch.full(like.shape, fill, dtype=like.dtype, device=like.device)


def copies(launch, args: list) -> list:
    """The operands, each but the weights (never written) copied."""
    return [a if r.kind == "param" else a.clone() for r, a in zip(launch.inputs, args)]


def check_out(kernel, launch, args: list) -> None:
    """One launch's kernel with and without `out`, on separate copies of its operands."""
    free_args, out_args = copies(launch, args), copies(launch, args)
    free = kernel.run(*free_args)
    own = [j for j, ref in enumerate(launch.outputs) if ref.kind != "state"]
    out = tuple(garbage(free[j]) for j in own)
    with DispatchCounter() as counter:
        got = kernel.run(*out_args, out=out)
    assert counter.sync_count == 0, (launch.node, counter.syncs)
    assert len(got) == len(free), launch.node
    for j, buffer in zip(own, out):
        handed_back = got[j] is buffer
        assert handed_back, f"{launch.node}: result {j} is not the tensor handed in"
        assert got[j].shape == free[j].shape and got[j].dtype == free[j].dtype, launch.node
        assert torch.equal(got[j], free[j]), f"{launch.node}: result {j} differs with out="
    for a, b in zip(free_args, out_args):  # caches updated in place agree too
        if a is not b:
            assert torch.equal(a, b), f"{launch.node}: an operand updated in place differs"


def walk_decode(
    plan, weights, root, done: frozenset[str] = frozenset(), entry: str = "decode"
) -> set[str]:
    """Check each distinct kernel of a one-token step of `entry` (a template rendered for one
    set of constants) at its first launch, but those of the templates `done`; returns the
    templates checked."""
    plan = replace(plan, entries={"decode": plan.entries[entry]})  # load no other kernels
    engine = Engine(
        plan, weights, device=DEVICE, dtype=torch.float32, backend="triton", kernel_root=root
    )
    gen = torch.Generator().manual_seed(0)
    for cache in engine.state.values():
        if cache.dtype.is_floating_point:
            cache.copy_(torch.randn(cache.shape, generator=gen))
    program = engine.programs["decode"]
    values = {
        "ids": torch.tensor([[7], [11]]),
        "mtp_ids": torch.tensor([[8], [12]]),  # the MTP block's next tokens
        "hidden": torch.randn(2, 1, 4, 256, generator=gen),  # and the streams it continues
        "positions": torch.tensor(POSITIONS)[:, None],
        "slots": torch.tensor([1, 0]),  # step rows in another order than the cache rows
    }
    values = {key: value.to(DEVICE) for key, value in values.items()}
    sources = {"param": engine.params, "state": engine.state}
    checked, kernels = set(), set()
    for i, (launch, op) in enumerate(zip(program.entry.launches, program.ops)):
        args = [
            sources[r.kind][r.name] if r.kind in sources else values[r.name] for r in launch.inputs
        ]
        kernel = program.kernels.get(i)
        if kernel is not None and kernel not in kernels and launch.op not in done:
            kernels.add(kernel)
            check_out(kernel, launch, args)
            checked.add(launch.op)
        dense = [a.dequantize(torch.float32) if isinstance(a, QuantWeight) else a for a in args]
        for ref, result in zip(launch.outputs, op.run(dense)):
            values[ref.name] = result
    return checked


@pytest.fixture(scope="module")
def tiny():
    spec = small_vocab()  # every template of the tiny model, the lm_head 1/126 of its size
    return spec, random_weights(spec, seed=0)


@pytest.mark.slow
def test_every_template_writes_into_out(tiny, tmp_path):
    spec, weights = tiny
    options = CompileOptions(max_batch=2, max_tokens=8, max_seq=160, dtype="fp32")
    fused = compile_spec(spec, options).plan  # experts as stored: FP4 routed, FP8 shared
    stored = as_stored({n: weights[n] for n in fused.params}, fused.params)
    checked = walk_decode(fused, stored, tmp_path)
    more = replace(options, weights="bf16")
    unfused = compile_spec(spec, more, disabled={"fuse_hc_norm", "fuse_moe_route"}).plan
    checked |= walk_decode(unfused, weights, tmp_path, done=frozenset(checked))
    checked |= walk_decode(unfused, weights, tmp_path, frozenset(checked), "draft")  # mtp: an add
    # + quant_sim; without the folds the kernels they fold in run alone (the route, the
    # attention's q norm + RoPE and inverse RoPE)
    folds = {"fuse_gate_route", "fuse_attn_q", "fuse_attn_o"}
    official = compile_spec(spec, replace(options, numerics="official"), disabled=folds).plan
    checked |= walk_decode(official, stored, tmp_path, frozenset(checked))
    assert checked == set(load_templates()), set(load_templates()) - checked
