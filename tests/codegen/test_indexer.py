"""indexer_topk (Triton) against the op's reference: the same index tensor, order included.

Rows sit at different positions, so a query sees no entry, a few, a number that crosses a
top-k chunk, or the whole (clamped) cache; the chunked merge, padding with -1 when top-k
exceeds what is visible, and the tie rule (equal scores: lower entry first) are all checked.
The key cache holds one row more than the step, whose rows read cache rows `slots` (permuted,
one skipped), so a kernel that read row b instead of slots[b] would pick other entries.
"""

from __future__ import annotations

import pytest
import torch

from tests.codegen.conftest import run_kernel
from v4c.codegen import jit
from v4c.ir.ops.attention import IndexerTopk
from v4c.ir.semantics.indexer import indexer_scores

DIM, Q_LORA, HEADS, HEAD_DIM, ROPE = 64, 24, 4, 16, 8


def _run(op, ins, kernel_cache):
    (got,) = run_kernel(op, ins, kernel_cache)
    (want,) = op.run(ins)
    assert got.dtype == want.dtype == torch.int64 and got.shape == want.shape
    return got, want


@pytest.mark.parametrize(
    "topk, entries, dtype",
    [
        (5, 40, torch.float32),  # several chunks of 16 merged; some rows see none
        (40, 24, torch.bfloat16),  # top-k beyond every row's entries: -1 padding; 2 dots a chunk
    ],
)
def test_matches_reference(topk, entries, dtype, kernel_cache):
    gen = torch.Generator().manual_seed(topk)
    rows, tokens = 3, 4
    positions = torch.tensor([0, 62, 200])[:, None] + torch.arange(tokens)  # [B, T]
    ins = [
        torch.randn(rows, tokens, Q_LORA, generator=gen).to(dtype),
        torch.randn(rows, tokens, DIM, generator=gen).to(dtype),
        positions,
        torch.tensor([3, 0, 2]),  # slots: step rows 0, 1, 2 -> cache rows 3, 0, 2 of 4
        (0.3 * torch.randn(HEADS * HEAD_DIM, Q_LORA, generator=gen)).to(dtype),
        (0.3 * torch.randn(HEADS, DIM, generator=gen)).to(dtype),
        torch.randn(rows + 1, entries, HEAD_DIM, generator=gen).to(dtype),
    ]
    op = IndexerTopk(ROPE, 10000.0, (4.0, 64, 32.0, 1.0), topk=topk, ratio=4)
    got, want = _run(op, ins, kernel_cache)
    assert (want == -1).any() and (want[2] >= 0).all() == (topk <= entries)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_exact_ties_go_to_the_lower_entry(kernel_cache):
    """Integer inputs keep every score exact, keys drawn from a small palette (one of them zero,
    which scores an exact 0) repeat, so many scores tie, across the top-k cut too."""
    gen = torch.Generator().manual_seed(7)
    rows, tokens, entries, topk = 2, 3, 20, 6

    def ints(lo, hi, *shape):
        return torch.randint(lo, hi + 1, shape, generator=gen).float()

    palette = ints(-1, 1, 4, HEAD_DIM)
    palette[:, HEAD_DIM - ROPE :] = 0  # no RoPE'd channels: q·k stays an exact integer
    palette[0] = 0
    keys = palette[torch.randint(0, 4, (rows + 1, entries), generator=gen)]  # [N, C, di]
    positions = torch.tensor([[50, 51, 52], [77, 78, 79]])
    slots = torch.tensor([2, 0])  # step rows 0, 1 -> cache rows 2, 0 of 3
    qr, x = ints(-2, 2, rows, tokens, Q_LORA), ints(-2, 2, rows, tokens, DIM)
    weights = [ints(-1, 1, HEADS * HEAD_DIM, Q_LORA), ints(-1, 1, HEADS, DIM)]  # wq_b, weights_proj
    ins = [qr, x, positions, slots, *weights, keys.to(torch.bfloat16)]
    op = IndexerTopk(ROPE, 10000.0, None, topk=topk, ratio=4)
    got, want = _run(op, ins, kernel_cache)
    read = keys[slots].to(torch.bfloat16)  # [B, C, di]: the rows the step reads
    scores = indexer_scores(qr, x, positions, *weights, read, rope_freqs=op.freqs("cpu"))
    picked = scores.gather(-1, want)
    assert (picked[..., 1:] == picked[..., :-1]).any()  # ties among the picks
    visible = torch.arange(entries) < (positions[..., None] + 1) // 4  # > topk for every query
    unpicked = scores.masked_fill(~visible, float("nan")).scatter(-1, want, float("nan"))
    assert (unpicked == picked[..., -1:]).any()  # and a tie across the cut
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_official_rounding_is_refused():
    """`sim` (numerics: official) rounds q to FP8/FP4; the template does not, so it says so."""
    op = IndexerTopk(ROPE, 10000.0, None, topk=4, ratio=4, sim=True)
    with pytest.raises(ValueError, match="FP8/FP4"):
        jit.params_for(op.kind, op.attrs(), [((1,), "bf16")] * len(op.operand_roles()))
