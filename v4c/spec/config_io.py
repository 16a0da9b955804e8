"""ModelSpec <-> `config.json`, both ways, in the two layouts a V4 checkpoint ships with.

- official: the HF-hub root config of DeepSeek's release (`compress_ratios`,
  `num_hash_layers`, `rope_scaling`, `quantization_config`, `expert_dtype`);
- hf: transformers' `DeepseekV4Config` (`layer_types`, `mlp_layer_types`, `compress_rates`,
  nested `rope_parameters`). It has no MTP attention kind (an HF import assumes sliding
  MTP). v4c's HF export describes dequantised weights and carries no quantisation; an HF
  import reads the `quantization_config` transformers writes when it saves a model it
  holds in FP8 (else bf16).

official -> spec -> official gives the same mapping back, key for key.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from v4c.errors import SpecError
from v4c.spec.layers import compact, layer_table
from v4c.spec.load import spec_from_data
from v4c.spec.schema import CSA_RATIO, ModelSpec

Format = Literal["official", "hf"]

ARCHITECTURE = "DeepseekV4ForCausalLM"
MODEL_TYPE = "deepseek_v4"
HF_LAYER_TYPES = {
    "sliding": "sliding_attention",
    "csa": "compressed_sparse_attention",
    "hca": "heavily_compressed_attention",
}
# PreTrainedConfig keys that say nothing about the model (HF import ignores them).
HF_GENERIC_KEYS = {
    "_name_or_path", "architectures", "model_type", "output_hidden_states", "output_attentions",
    "return_dict", "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id",
    "problem_type", "output_router_logits", "router_aux_loss_coef", "router_jitter_noise",
    "mlp_bias", "qk_rope_head_dim", "tokenizer_class",
}  # fmt: skip

# spec path -> config key, for the keys both layouts share
_COMMON = {
    ("vocab_size",): "vocab_size",
    ("hidden_size",): "hidden_size",
    ("num_layers",): "num_hidden_layers",
    ("norm_eps",): "rms_norm_eps",
    ("max_position_embeddings",): "max_position_embeddings",
    ("tie_word_embeddings",): "tie_word_embeddings",
    ("tokens", "bos"): "bos_token_id",
    ("tokens", "eos"): "eos_token_id",
    ("attention", "num_heads"): "num_attention_heads",
    ("attention", "num_kv_heads"): "num_key_value_heads",
    ("attention", "head_dim"): "head_dim",
    ("attention", "q_lora_rank"): "q_lora_rank",
    ("attention", "o_groups"): "o_groups",
    ("attention", "o_lora_rank"): "o_lora_rank",
    ("attention", "sliding_window"): "sliding_window",
    ("attention", "bias"): "attention_bias",
    ("attention", "indexer", "num_heads"): "index_n_heads",
    ("attention", "indexer", "head_dim"): "index_head_dim",
    ("attention", "indexer", "topk"): "index_topk",
    ("hc", "mult"): "hc_mult",
    ("hc", "sinkhorn_iters"): "hc_sinkhorn_iters",
    ("hc", "eps"): "hc_eps",
    ("moe", "num_experts"): "n_routed_experts",
    ("moe", "num_shared_experts"): "n_shared_experts",
    ("moe", "top_k"): "num_experts_per_tok",
    ("moe", "intermediate_size"): "moe_intermediate_size",
    ("moe", "scoring_func"): "scoring_func",
    ("moe", "norm_topk_prob"): "norm_topk_prob",
    ("moe", "routed_scaling_factor"): "routed_scaling_factor",
    ("moe", "swiglu_limit"): "swiglu_limit",
    ("moe", "hidden_act"): "hidden_act",
    ("mtp", "num_layers"): "num_nextn_predict_layers",
    ("meta", "initializer_range"): "initializer_range",
    ("meta", "use_cache"): "use_cache",
    ("meta", "attention_dropout"): "attention_dropout",
}
_YARN_KEYS = ("beta_fast", "beta_slow", "factor", "original_max_position_embeddings")
# quantization_config key -> spec.quant field
_QUANT_KEYS = {
    "fmt": "fmt",
    "scale_fmt": "scale_fmt",
    "weight_block_size": "block",
    "activation_scheme": "activation_scheme",
}


def detect_format(config: dict, source: str = "config.json") -> Format:
    if "compress_ratios" in config:
        return "official"
    if "layer_types" in config or "rope_parameters" in config:
        return "hf"
    raise SpecError(
        [f"{source}: neither the official layout (compress_ratios) nor the HF one (layer_types)"]
    )


def spec_from_config(config: Any, name: str, source: str = "config.json") -> ModelSpec:
    """A validated spec from an official or HF config mapping (layout detected)."""
    if not isinstance(config, dict):
        raise SpecError([f"{source}: expected a JSON object, got {type(config).__name__}"])
    if config.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise SpecError(
            [f"{source}: model_type: expected {MODEL_TYPE!r}, got {config['model_type']!r}"]
        )
    reader = _from_official if detect_format(config, source) == "official" else _from_hf
    data, used, problems = reader(dict(config))
    data["name"] = name
    unknown = sorted(set(config) - used - {"model_type", "architectures"})
    problems += [f"{key}: unknown config key" for key in unknown]
    problems += [
        f"{key}: required key is missing"
        for path, key in _COMMON.items()
        if key not in config and _required(path)
    ]
    if problems:
        raise SpecError([f"{source}: {p}" for p in sorted(set(problems), key=problems.index)])
    return spec_from_data(data, source=source)


def spec_to_config(spec: ModelSpec, fmt: Format) -> dict:
    return _to_official(spec) if fmt == "official" else _to_hf(spec)


# -- official ------------------------------------------------------------------------------


def _to_official(spec: ModelSpec) -> dict:
    cfg = _common_out(spec)
    cfg["qk_rope_head_dim"] = spec.attention.rope_head_dim
    cfg["num_hash_layers"] = spec.moe.hash_layers
    cfg["topk_method"] = spec.moe.topk_method
    cfg["rope_theta"] = _num(spec.rope.theta)
    cfg["compress_rope_theta"] = _num(spec.rope.compress_theta)
    if spec.rope.yarn is not None:
        yarn = spec.rope.yarn.model_dump()
        cfg["rope_scaling"] = {k: _num(yarn[k]) for k in _YARN_KEYS} | {"type": "yarn"}
    cfg["compress_ratios"] = [row.compress_ratio for row in layer_table(spec)]
    q = spec.quant
    if q.weights == "fp8":
        cfg["quantization_config"] = {
            "activation_scheme": q.activation_scheme,
            "fmt": q.fmt,
            "quant_method": "fp8",
            "scale_fmt": q.scale_fmt,
            "weight_block_size": list(q.block),
        }
    if q.experts is not None:
        cfg["expert_dtype"] = q.experts
    cfg["torch_dtype"] = spec.meta.torch_dtype
    if spec.meta.transformers_version is not None:
        cfg["transformers_version"] = spec.meta.transformers_version
    return dict(sorted(cfg.items()))


def _from_official(cfg: dict) -> tuple[dict, set[str], list[str]]:
    data, used = _common_in(cfg)
    problems: list[str] = []
    data["attention"]["rope_head_dim"] = cfg.get("qk_rope_head_dim")
    data["moe"]["hash_layers"] = cfg.get("num_hash_layers")
    data["moe"]["topk_method"] = cfg.get("topk_method", "noaux_tc")
    data["rope"] = {
        "theta": cfg.get("rope_theta"),
        "compress_theta": cfg.get("compress_rope_theta"),
    }
    used |= {"qk_rope_head_dim", "num_hash_layers", "topk_method", "rope_theta"}
    used |= {"compress_rope_theta", "rope_scaling", "compress_ratios", "quantization_config"}
    used |= {"expert_dtype", "torch_dtype", "transformers_version"}
    scaling = _typed(cfg, "rope_scaling", dict, problems)
    if scaling is not None:
        kind = scaling.get("type", scaling.get("rope_type"))
        if kind != "yarn":
            problems.append(f"rope_scaling.type: expected 'yarn', got {kind!r}")
        data["rope"]["yarn"] = {k: scaling.get(k) for k in _YARN_KEYS}
    ratios = cfg.get("compress_ratios")
    n, n_mtp = cfg.get("num_hidden_layers"), cfg.get("num_nextn_predict_layers", 0)
    if not isinstance(ratios, list):
        problems.append("compress_ratios: expected a list of per-layer ratios")
    for key, value in (("num_hidden_layers", n), ("num_nextn_predict_layers", n_mtp)):
        if value is not None and type(value) is not int:
            problems.append(f"{key}: expected an integer, got {value!r:.60}")
    if isinstance(ratios, list) and type(n) is int and type(n_mtp) is int:
        problems += _pattern_from_ratios(ratios, n, n_mtp, data)
    data["quant"] = _quant_in(cfg, problems)
    data["meta"]["torch_dtype"] = cfg.get("torch_dtype", "bfloat16")
    data["meta"]["transformers_version"] = cfg.get("transformers_version")
    return data, used, problems


def _pattern_from_ratios(ratios: list, n: int, n_mtp: int, data: dict) -> list[str]:
    if not all(type(r) is int and r >= 0 for r in ratios):
        return [f"compress_ratios: expected non-negative integers, got {ratios}"]
    if len(ratios) != n + n_mtp:
        return [
            f"compress_ratios: expected num_hidden_layers + num_nextn_predict_layers "
            f"({n + n_mtp}) entries, got {len(ratios)}"
        ]
    hca = sorted({r for r in ratios if r not in (0, CSA_RATIO)})
    if len(hca) > 1:
        return [f"compress_ratios: expected 0, 4 and one HCA ratio, got {sorted(set(ratios))}"]
    hca_ratio = hca[0] if hca else 128
    kind = {0: "sliding", CSA_RATIO: "csa", hca_ratio: "hca"}
    data["attention"]["hca_ratio"] = hca_ratio
    data["layers"] = compact([kind[r] for r in ratios[:n]])
    mtp_kinds = {kind[r] for r in ratios[n:]}
    if len(mtp_kinds) > 1:
        return [f"compress_ratios: MTP layers must share one ratio, got {ratios[n:]}"]
    data["mtp"]["attention"] = mtp_kinds.pop() if mtp_kinds else "sliding"
    return []


# -- HF ------------------------------------------------------------------------------------


def _to_hf(spec: ModelSpec) -> dict:
    cfg = _common_out(spec)
    a, rows = spec.attention, layer_table(spec)[: spec.num_layers]
    prf = a.rope_head_dim / a.head_dim
    cfg["layer_types"] = [HF_LAYER_TYPES[row.attention] for row in rows]
    cfg["mlp_layer_types"] = ["hash_moe" if row.gate == "hash" else "moe" for row in rows]
    cfg["compress_rates"] = {
        HF_LAYER_TYPES["csa"]: CSA_RATIO,
        HF_LAYER_TYPES["hca"]: a.hca_ratio,
    }
    main = {"rope_type": "default", "rope_theta": spec.rope.theta, "partial_rotary_factor": prf}
    compress: dict[str, Any] = {
        "rope_theta": spec.rope.compress_theta,
        "partial_rotary_factor": prf,
    }
    if spec.rope.yarn is not None:
        compress |= spec.rope.yarn.model_dump() | {"rope_type": "yarn", "attention_factor": 1.0}
    else:
        compress["rope_type"] = "default"
    cfg["rope_parameters"] = {"main": main, "compress": compress}
    cfg["rope_theta"] = spec.rope.theta
    cfg["compress_rope_theta"] = spec.rope.compress_theta
    cfg["partial_rotary_factor"] = prf
    cfg["mlp_bias"] = False
    cfg["dtype"] = spec.meta.torch_dtype
    return dict(sorted(cfg.items()))


def _from_hf(cfg: dict) -> tuple[dict, set[str], list[str]]:
    data, used = _common_in(cfg)
    problems: list[str] = []
    used |= HF_GENERIC_KEYS | {
        "layer_types",
        "mlp_layer_types",
        "compress_rates",
        "rope_parameters",
    }
    used |= {"rope_theta", "compress_rope_theta", "partial_rotary_factor", "dtype", "torch_dtype"}
    used |= {"transformers_version"}
    by_hf = {v: k for k, v in HF_LAYER_TYPES.items()}
    types = _typed(cfg, "layer_types", list, problems) or []
    if any(not isinstance(t, str) or t not in by_hf for t in types):
        problems.append(f"layer_types: expected entries of {sorted(by_hf)}, got {types}")
    else:
        data["layers"] = compact([by_hf[t] for t in types])
    mlp = _typed(cfg, "mlp_layer_types", list, problems) or []
    hash_layers = sum(1 for t in mlp if t == "hash_moe")
    if mlp[:hash_layers] != ["hash_moe"] * hash_layers:
        problems.append(f"mlp_layer_types: hash_moe layers must come first, got {mlp}")
    data["moe"]["hash_layers"] = hash_layers
    rates = _typed(cfg, "compress_rates", dict, problems) or {}
    data["attention"]["hca_ratio"] = rates.get(HF_LAYER_TYPES["hca"], 128)
    if rates.get(HF_LAYER_TYPES["csa"], CSA_RATIO) != CSA_RATIO:
        problems.append(f"compress_rates: CSA must be {CSA_RATIO}, got {rates}")
    params = _typed(cfg, "rope_parameters", dict, problems) or {}
    main = _typed(params, "main", dict, problems, "rope_parameters.") or {}
    compress = _typed(params, "compress", dict, problems, "rope_parameters.") or {}
    data["rope"] = {
        "theta": main.get("rope_theta", cfg.get("rope_theta")),
        "compress_theta": compress.get("rope_theta", cfg.get("compress_rope_theta")),
    }
    if compress.get("rope_type") == "yarn":
        data["rope"]["yarn"] = {k: compress.get(k) for k in _YARN_KEYS}
    prf = main.get("partial_rotary_factor", cfg.get("partial_rotary_factor"))
    head_dim = cfg.get("head_dim")
    if type(prf) in (int, float) and type(head_dim) is int and math.isfinite(prf):
        data["attention"]["rope_head_dim"] = round(head_dim * prf)
    data["mtp"]["attention"] = "sliding"
    data["moe"]["topk_method"] = cfg.get("topk_method", "noaux_tc")
    used |= {"topk_method", "quantization_config", "expert_dtype"}
    data["quant"] = _quant_in(cfg, problems)
    data["meta"]["torch_dtype"] = cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"
    data["meta"]["transformers_version"] = cfg.get("transformers_version")
    return data, used, problems


# -- shared --------------------------------------------------------------------------------


def _common_out(spec: ModelSpec) -> dict:
    dumped = spec.model_dump()
    cfg: dict[str, Any] = {"architectures": [ARCHITECTURE], "model_type": MODEL_TYPE}
    for path, key in _COMMON.items():
        value: Any = dumped
        for part in path:
            value = value[part]
        cfg[key] = value
    if spec.tokens.pad is not None:
        cfg["pad_token_id"] = spec.tokens.pad
    return cfg


def _common_in(cfg: dict) -> tuple[dict, set[str]]:
    data: dict[str, Any] = {
        "attention": {"indexer": {}},
        "moe": {},
        "hc": {},
        "mtp": {},
        "meta": {},
        "tokens": {},
    }
    used = set()
    for path, key in _COMMON.items():
        if key not in cfg:
            continue
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = cfg[key]
        used.add(key)
    if cfg.get("pad_token_id") is not None:
        data["tokens"]["pad"] = cfg["pad_token_id"]
    used.add("pad_token_id")
    return data, used


def _quant_in(cfg: dict, problems: list[str]) -> dict:
    """The spec's `quant` from `quantization_config` and `expert_dtype`. transformers keeps
    both when it saves a model it holds in FP8 (`expert_dtype` also inside the quantisation
    config, beside its own `dequantize` and `modules_to_*` keys, which do not change what
    the files store); without `quantization_config` the weights are bf16."""
    quant = _typed(cfg, "quantization_config", dict, problems)
    if quant is None:
        out: dict[str, Any] = {"weights": "bf16"}
    else:
        if quant.get("quant_method") != "fp8":
            problems.append(
                f"quantization_config.quant_method: expected 'fp8', got "
                f"{quant.get('quant_method')!r}"
            )
        out = {"weights": "fp8"}
        for key, field in _QUANT_KEYS.items():
            if key in quant:
                out[field] = quant[key]
    experts = cfg.get("expert_dtype", (quant or {}).get("expert_dtype"))
    if experts is not None:
        out["experts"] = experts
    return out


def _required(path: tuple[str, ...]) -> bool:
    """Whether the spec field at `path` has no default (its config key must be given)."""
    model: Any = ModelSpec
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[path[-1]].is_required()


def _typed(cfg: dict, key: str, kind: type, problems: list[str], prefix: str = "") -> Any:
    """cfg[key] if it is absent/None or of `kind`; else None and a problem naming the key."""
    value = cfg.get(key)
    if value is None or isinstance(value, kind):
        return value
    problems.append(f"{prefix}{key}: expected a {kind.__name__}, got {value!r:.60}")
    return None


def _num(x: float) -> float | int:
    """Integral values as ints, as the official config writes rope thetas and YaRN numbers."""
    return int(x) if float(x).is_integer() else x
