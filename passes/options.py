"""The options a plan is compiled for, and their defaults: the one owner of the compile
defaults (the CLI and `open_session` take theirs from here). Imports nothing heavy, so the CLI
can show the defaults without loading the compiler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class CompileOptions:
    """Runtime limits a plan is made for (static buffers are sized from these)."""

    max_batch: int = 1  # sequences per step, and the cache rows that hold them
    max_tokens: int = 1024  # tokens per sequence in one prefill step (longer prompts are chunked)
    max_seq: int = 8192  # longest sequence the caches hold
    logits: Literal["all", "last"] = "last"  # prefill/decode/draft logits: every token, or the last
    # the most draft tokens one verify step checks; 0 (or a spec without MTP): no draft and
    # verify entry points, so no speculative decoding
    max_draft: int = 3
    numerics: Literal["plain", "official"] = "plain"  # official: the §12 activation rounding
    # FP8/FP4 weights: kept as stored where every reader's kernel reads them, or widened
    weights: Literal["as-stored", "bf16"] = "as-stored"
    dtype: Literal["bf16", "fp32"] = "bf16"  # what IR-bf16 activations are held in at run time
    # the TP x EP grid the plan is one rank of (the `shard` pass; 1 x 1: one process)
    tp: int = 1  # attention and indexer heads, and each routed expert's inner dim
    ep: int = 1  # routed experts

    @property
    def world(self) -> int:
        return self.tp * self.ep

    def env(self, entry: str) -> dict[str, int]:
        """Values of the symbolic dims for an entry point."""
        steps = {"prefill": self.max_tokens, "decode": 1, "verify": self.max_draft + 1}
        tokens = steps.get(entry, self.max_tokens)  # draft: an MTP prefill of a prompt chunk
        return {"B": self.max_batch, "N": self.max_batch, "T": tokens, "S": self.max_seq}
