"""A rank of a split plan reads its pieces of each weight: the same values as cutting the
whole weight, FP8 weights with their block scales and FP4 experts (whole experts per EP
rank, inner dims per TP rank) kept quantised or dequantised; from the official layout it
reads only the parts of the files that hold them (memory-mapped slices), and so it does
from the HF one too (its merged expert gate_up_proj as two row pieces, one per half)."""

from __future__ import annotations

import pytest
import torch

from tests.runtime.dist_worker import SPEC
from v4c.ir.weights import WeightFormat
from v4c.compile import compile_spec
from v4c.errors import CheckpointError
from v4c.ir.semantics.quant import QuantWeight
from v4c.passes.options import CompileOptions
from v4c.runtime.checkpoint import read as checkpoint_read
from v4c.runtime.checkpoint import load_checkpoint, write_hf, write_official
from v4c.runtime.checkpoint.pieces import rank_ranges, rank_weights, take
from v4c.runtime.checkpoint.random_weights import random_weights
from v4c.runtime.checkpoint import quantised_weights
from v4c.spec import load_spec
from v4c.spec.parallel import Grid

GRID = Grid(2, 2)


def same(a, b) -> bool:
    if isinstance(a, QuantWeight):
        bytes_of = [x.view(torch.uint8) for x in (a.data, a.scale, b.data, b.scale)]
        return torch.equal(bytes_of[0], bytes_of[2]) and torch.equal(bytes_of[1], bytes_of[3])
    return a.shape == b.shape and torch.equal(a, b)


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPEC)


@pytest.fixture(scope="module")
def weights(spec):
    return random_weights(spec, seed=3)


@pytest.fixture(scope="module")
def plan(spec):
    """tp=2 x ep=2, FP8/FP4 weights kept where the kernels read them (the experts), the
    others dequantised after their piece is read."""
    return compile_spec(spec, CompileOptions(dtype="fp32", tp=GRID.tp, ep=GRID.ep)).plan


@pytest.fixture(scope="module")
def official(spec, weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("official")
    write_official(folder, spec, weights, shards=2)
    return folder


@pytest.mark.parametrize("layout", ["official", "hf"])
def test_each_rank_reads_the_pieces_of_the_whole(layout, spec, weights, plan, official, tmp_path):
    folder = official
    if layout == "hf":  # pieces of tensors stored as they are, gate_up_proj's two halves
        folder = tmp_path
        write_hf(folder, spec, weights, dtype=torch.float32)
    kw = dict(
        dtype=torch.float32, progress=False, names=set(plan.params),
        keep_quantised=quantised_weights(plan) if layout == "official" else frozenset(),
    )  # fmt: skip
    _, whole = load_checkpoint(folder, spec, **kw)
    for rank in (1, 2):  # (tp 1, ep 0) and (tp 0, ep 1)
        _, mine = load_checkpoint(folder, spec, pieces=rank_ranges(plan.params, GRID, rank), **kw)
        expected = rank_weights(whole, plan.params, GRID, rank)
        assert mine.keys() == expected.keys()
        for name, value in expected.items():
            assert same(mine[name], value), name
            assert tuple(mine[name].shape) == plan.params[name].shape, name


def spy_reads(monkeypatch) -> list:
    """(stored name, index or None: whole) of every tensor read from the files, in order."""
    reads = []
    read = checkpoint_read._tensor

    def spy(handle, name, file, index=None):
        reads.append((name, index))
        return read(handle, name, file, index)

    monkeypatch.setattr(checkpoint_read, "_tensor", spy)
    return reads


def test_the_official_layout_is_read_in_pieces(spec, plan, official, monkeypatch):
    reads = spy_reads(monkeypatch)
    pieces = rank_ranges(plan.params, GRID, 3)
    load_checkpoint(official, spec, progress=False, names=set(plan.params), pieces=pieces)
    by_name = dict(reads)
    # rank 3: EP index 1 (experts 4..7), TP index 1; experts 0..3 are not read at all
    assert "layers.1.ffn.experts.0.w1.weight" not in by_name
    assert by_name["layers.1.ffn.experts.5.w1.weight"] == (slice(32, 64), slice(0, 128))
    assert by_name["layers.1.ffn.experts.5.w2.scale"] == (slice(0, 256), slice(1, 2))
    assert by_name["layers.1.attn.wq_b.weight"] == (slice(256, 512), slice(0, 128))
    assert by_name["layers.1.attn.wq_b.scale"] == (slice(2, 4), slice(0, 1))
    assert by_name["embed.weight"] == (slice(3 * 2048, 4 * 2048), slice(0, 256))
    assert by_name["layers.1.attn.wkv.weight"] is None  # not split: read whole


def test_the_hf_layout_reads_the_two_halves_of_gate_up_proj(
    spec, weights, plan, tmp_path, monkeypatch
):
    write_hf(tmp_path, spec, weights, dtype=torch.float32)
    reads = spy_reads(monkeypatch)
    pieces = rank_ranges(plan.params, GRID, 3)
    load_checkpoint(tmp_path, spec, progress=False, names=set(plan.params), pieces=pieces)
    gate_up = [index for name, index in reads if name == "model.layers.1.mlp.experts.gate_up_proj"]
    inner = spec.moe.intermediate_size
    # rank 3: experts 4..7, the second half of each expert's inner rows, in w1 and in w3
    assert gate_up == [
        (slice(4, 8), slice(inner // 2, inner), slice(0, spec.hidden_size)),
        (slice(4, 8), slice(inner + inner // 2, 2 * inner), slice(0, spec.hidden_size)),
    ]


def test_a_piece_that_cuts_a_scale_block_is_refused():
    w = QuantWeight.quantize(torch.randn(256, 256), WeightFormat.fp8((128, 128)))
    with pytest.raises(CheckpointError, match="cuts its scale blocks"):
        take(w, ((64, 192), (0, 256)), "w")
