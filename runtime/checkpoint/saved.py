"""The layouts transformers writes: what `DeepseekV4ForCausalLM.save_pretrained` names.

transformers loads the official release through renames (its conversion mapping for
deepseek_v4: `.attn.` -> `.self_attn.`, `^embed.weight` -> `embed_tokens.weight`,
`.norm.` -> `.kv_norm.`, ...) and remembers those that matched a name; on save it undoes
them on its module names (all of them for a model it did not load, e.g. built from a config).
Two outcomes follow.

hf-saved: a model loaded from official names (or built in memory). The files hold the
official names with the module's `model.` prefix, except where undoing a rename does not give
the official name back:
- `head.weight`: `lm_head` has no prefix, so the anchored rename is undone in full;
- `model.embed_tokens.weight`, `model.hc_head.hc_{fn,base,scale}`: renames anchored at the
  name's start do not match behind the prefix, so these keep the module's names;
- `model.layers.N.attn.norm.weight` for the official `attn.kv_norm.weight`: undoing the
  compressor's `.norm.` -> `.kv_norm.` also renames the attention's own `kv_norm`.
Experts are one tensor per expert, as in the release. It comes in two flavours, like the
official names: dequantised (in the dtype the model was held in; transformers keeps hc,
sinks, norms and biases in fp32), and FP8/FP4 with E8M0 `.scale`s per the spec's storage (a
model transformers held in FP8, saved with its `quantization_config`).

hf-resaved: a model loaded from transformers' module names (the hf layout). Of the renames
only `.norm.` -> `.kv_norm.` matches there (in `model.norm.weight`), so the files hold the
module names with every `kv_norm` written `norm`.

Neither has MTP (transformers does not build it).
"""

from __future__ import annotations

from v4c.runtime.checkpoint.hf import hf_units
from v4c.runtime.checkpoint.layout import Unit, official_units, renamed
from v4c.spec import ModelSpec

_TOP = {
    "head.weight": "head.weight",
    "embed.weight": "model.embed_tokens.weight",
    **{f"hc_head_{k}": f"model.hc_head.hc_{k}" for k in ("fn", "base", "scale")},
}
_KV_NORM = ".attn.kv_norm."


def saved_name(name: str) -> str:
    """The name `save_pretrained` gives an official (non-MTP) stored tensor or scale."""
    if name in _TOP:
        return _TOP[name]
    return "model." + name.replace(_KV_NORM, ".attn.norm.")


def saved_units(spec: ModelSpec, *, quantised: bool = True) -> list[Unit]:
    """What `save_pretrained` writes for `spec`: quantised per the spec's storage (a model held
    in FP8) or, with `quantised=False`, every tensor dequantised."""
    units = official_units(spec, quantised=quantised)
    return [renamed(u, saved_name) for u in units if not u.logical[0].name.startswith("mtp.")]


def resaved_hf_units(spec: ModelSpec) -> list[Unit]:
    """What `save_pretrained` writes for `spec` after loading it from the hf layout."""
    return [renamed(u, lambda name: name.replace(".kv_norm.", ".norm.")) for u in hf_units(spec)]
