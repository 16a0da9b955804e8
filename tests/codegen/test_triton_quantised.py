"""An official checkpoint on the Triton backend: the stored FP4/FP8 weights stay quantised in
memory and the logits match the torch backend's. Apart from test_triton_backend.py so that
the two interpreted end-to-end runs go to different pytest-xdist workers (--dist loadfile)."""

from __future__ import annotations

import pytest
import torch

from tests.codegen.test_triton_backend import compare, decode_steps
from tests.small_vocab import small_vocab
from v4c.runtime.checkpoint.random_weights import random_weights

pytestmark = pytest.mark.slow


def test_quantised_experts_stay_quantised(tmp_path, kernel_cache):
    """An official checkpoint on the Triton backend: the FP4 routed and FP8 shared expert
    weights stay in their stored format in memory (the kernels dequantise on the fly), and
    the logits match the torch backend, which dequantises them at load."""
    from v4c.ir.semantics.quant import QuantWeight
    from v4c.runtime.checkpoint import TINY_SHARDS, write_official
    from v4c.session import open_session

    spec = small_vocab()  # the tiny model's layers and formats, written as make_tiny does
    write_official(tmp_path / "tiny", spec, random_weights(spec, seed=0), shards=TINY_SHARDS)
    ref = open_session(tmp_path / "tiny", backend="torch", numerics="plain", progress=False)
    tri = open_session(
        tmp_path / "tiny", backend="triton", numerics="plain", progress=False,
        kernel_root=kernel_cache,
    )  # fmt: skip
    params = tri.engine.params.items()
    kept = {name: w.format.kind for name, w in params if isinstance(w, QuantWeight)}
    assert kept["layers.0.ffn.experts.{e}.w1.weight"] == "fp4"
    assert kept["layers.3.ffn.shared_experts.w2.weight"] == "fp8"
    assert kept["layers.3.attn.wo_b.weight"] == "fp8"  # the dense GEMMs read FP8 as stored
    # 4 layers and the MTP block: 6 expert and 5 attention GEMM weights each, e_proj, h_proj,
    # the 2 CSA layers' indexer wq_b
    assert len(kept) == 5 * (6 + 5) + 2 + 2 and not any(
        isinstance(w, QuantWeight) for w in ref.engine.params.values()
    )
    gen = torch.Generator().manual_seed(0)
    prompt = [[0, *torch.randint(0, spec.vocab_size, (4,), generator=gen).tolist()]]
    # a prefill and a decode step: each entry's kernels read the stored formats once; more
    # decode steps would run the same kernels on the same weights again
    steps = [prompt, *decode_steps(gen, spec.vocab_size, 1, 1)]
    compare(ref.engine, tri.engine, steps, atol=1e-4)
