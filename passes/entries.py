"""The entry points a plan is compiled for, and what each returns: the one owner of that table
(select_outputs keeps the graph outputs it names, memory_plan and lower make one arena and one
launch list per entry over just the nodes its outputs need).

- prefill (T = max_tokens): the logits (at the last token of each row, or every token with
  `logits="all"`) and, when the plan drafts, the main model's last-block streams `hidden` at
  every token, which the draft entry is fed.
- decode (T = 1): the logits.
- verify (T = max_draft + 1): a main-model step over the last token and the drafts; logits
  and `hidden` at every token (acceptance reads them all).
- draft (T = max_tokens): the MTP block alone, fed `hidden` and the next tokens (`mtp_ids`);
  its logits and its own streams (chained drafts feed those back) at the last token.
"""

from __future__ import annotations

from v4c.passes.options import CompileOptions
from v4c.spec import ModelSpec

ENTRY_ORDER = ("prefill", "decode", "verify", "draft")


def entry_outputs(options: CompileOptions, spec: ModelSpec) -> dict[str, dict[str, str]]:
    """entry -> {the key the runtime reads: the graph output key}."""
    last = "last_" if options.logits == "last" else ""
    entries = {"prefill": {"logits": f"{last}logits"}, "decode": {"logits": f"{last}logits"}}
    if drafts(options, spec):
        entries["prefill"]["hidden"] = "hidden"
        entries["verify"] = {"logits": "logits", "hidden": "hidden"}
        entries["draft"] = {"logits": f"{last}mtp_logits", "hidden": f"{last}mtp_hidden"}
    return entries


def drafts(options: CompileOptions, spec: ModelSpec) -> bool:
    """Whether the plan has the draft and verify entries (speculative decoding with MTP)."""
    return options.max_draft > 0 and spec.mtp.num_layers > 0
