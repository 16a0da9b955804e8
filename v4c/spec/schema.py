"""The V4 spec language: one pydantic model that covers V4-Flash, V4-Pro and their variants.

Every field says which official `config.json` key it corresponds to (`official=` in the
field's JSON schema extra); `config_io` maps between the two with these names. Fields are
grouped the way the model is: attention, RoPE, hyper-connections, MoE, MTP, quantisation.
Cross-field rules (head groups, top-k, pattern length, ...) live in `checks.py` so that each
can name the field it is about.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

AttentionKind = Literal["sliding", "csa", "hca"]
"""sliding: window only (compress ratio 0); csa: ratio-4 overlapping compressor plus the
lightning indexer; hca: non-overlapping compressor with ratio `attention.hca_ratio` (128)."""

CSA_RATIO = 4  # the official code ties overlap and the indexer to exactly this ratio


def coff(ratio: int) -> int:
    """The compressor's overlap factor for a compress ratio (V4_REFERENCE §6): 2 for the
    overlapping ratio-4 (CSA) compressor, whose entries pool two half windows, else 1."""
    return 2 if ratio == CSA_RATIO else 1


def spec_field(default: Any, official: str | None, doc: str, **kw: Any) -> Any:
    """A documented field; `official` is the config.json key (None: v4c only)."""
    return Field(default, description=doc, json_schema_extra={"official": official}, **kw)


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Repeat(_Node):
    """`{repeat: N, of: [...]}` in a layer pattern: the items of `of`, N times over."""

    repeat: int = spec_field(..., None, "How many times `of` repeats.", gt=0, le=100_000)
    of: tuple[PatternItem, ...] = spec_field(
        ..., None, "The pattern items to repeat.", min_length=1
    )


def _pattern_tag(value: Any) -> str:
    return "repeat" if isinstance(value, (dict, Repeat)) else "kind"


PatternItem = Annotated[
    Union[Annotated[AttentionKind, Tag("kind")], Annotated[Repeat, Tag("repeat")]],
    Discriminator(_pattern_tag),
]
Repeat.model_rebuild()


class Tokens(_Node):
    bos: int = spec_field(0, "bos_token_id", "Begin-of-sentence id.", ge=0)
    eos: int = spec_field(1, "eos_token_id", "End-of-sentence id; generation stops here.", ge=0)
    pad: int | None = spec_field(None, "pad_token_id", "Padding id (official configs set none).")


class Indexer(_Node):
    """The lightning indexer of CSA layers (V4_REFERENCE §7)."""

    num_heads: int = spec_field(..., "index_n_heads", "Indexer query heads.", gt=0)
    head_dim: int = spec_field(
        ..., "index_head_dim", "Indexer head dim (a power of two: Hadamard).", gt=0
    )
    topk: int = spec_field(..., "index_topk", "Compressed entries each query keeps.", gt=0)


class Attention(_Node):
    num_heads: int = spec_field(..., "num_attention_heads", "Query heads H.", gt=0)
    num_kv_heads: Literal[1] = spec_field(
        1, "num_key_value_heads", "KV heads: V4 has one shared K=V head."
    )
    head_dim: int = spec_field(..., "head_dim", "Head dim d of q, k and v (512).", gt=0)
    rope_head_dim: int = spec_field(
        ..., "qk_rope_head_dim", "Trailing dims of each head that carry RoPE (64).", gt=0
    )
    q_lora_rank: int = spec_field(..., "q_lora_rank", "Rank of the q LoRA (wq_a/wq_b).", gt=0)
    o_groups: int = spec_field(
        ..., "o_groups", "Head groups G of the grouped output projection.", gt=0
    )
    o_lora_rank: int = spec_field(..., "o_lora_rank", "Per-group rank R of wo_a.", gt=0)
    sliding_window: int = spec_field(
        ..., "sliding_window", "Raw KV tokens every layer attends to, current one included.", gt=0
    )
    hca_ratio: int = spec_field(
        128, "compress_ratios", "Compress ratio of HCA layers (CSA layers are always 4).", gt=0
    )
    indexer: Indexer = spec_field(..., None, "Lightning indexer (CSA layers).")
    bias: Literal[False] = spec_field(False, "attention_bias", "Projection biases: V4 has none.")


class Yarn(_Node):
    """YaRN frequency interpolation, applied on compressed (CSA/HCA) layers only, without mscale."""

    factor: float = spec_field(..., "rope_scaling.factor", "Context extension factor.", gt=0)
    original_max_position_embeddings: int = spec_field(
        ..., "rope_scaling.original_max_position_embeddings", "Pre-extension context.", gt=0
    )
    beta_fast: float = spec_field(..., "rope_scaling.beta_fast", "YaRN beta_fast.", gt=0)
    beta_slow: float = spec_field(..., "rope_scaling.beta_slow", "YaRN beta_slow.", gt=0)


class Rope(_Node):
    theta: float = spec_field(..., "rope_theta", "RoPE base of sliding layers (and MTP).", gt=0)
    compress_theta: float = spec_field(
        ..., "compress_rope_theta", "RoPE base of CSA/HCA layers.", gt=0
    )
    yarn: Yarn | None = spec_field(None, "rope_scaling", "YaRN on CSA/HCA layers; null: none.")


class HyperConnections(_Node):
    mult: int = spec_field(..., "hc_mult", "Residual streams n_hc.", gt=0, le=64)
    sinkhorn_iters: int = spec_field(..., "hc_sinkhorn_iters", "Sinkhorn iterations.", gt=0)
    eps: float = spec_field(..., "hc_eps", "Sinkhorn / pre-weight epsilon.", ge=0)


class MoE(_Node):
    num_experts: int = spec_field(..., "n_routed_experts", "Routed experts E.", gt=0)
    num_shared_experts: int = spec_field(
        ..., "n_shared_experts", "Shared experts (always on).", ge=0
    )
    top_k: int = spec_field(..., "num_experts_per_tok", "Routed experts per token K.", gt=0)
    intermediate_size: int = spec_field(
        ..., "moe_intermediate_size", "Inner width I of every expert.", gt=0
    )
    scoring_func: Literal["sqrtsoftplus", "softmax", "sigmoid"] = spec_field(
        "sqrtsoftplus", "scoring_func", "Router score function."
    )
    topk_method: Literal["noaux_tc"] = spec_field(
        "noaux_tc", "topk_method", "Selection: top-k of score + correction bias."
    )
    norm_topk_prob: bool = spec_field(True, "norm_topk_prob", "Normalise the top-k weights.")
    routed_scaling_factor: float = spec_field(
        ..., "routed_scaling_factor", "Scale on the routed weights.", gt=0
    )
    hash_layers: int = spec_field(
        ..., "num_hash_layers", "The first N layers route by the tid2eid hash table.", ge=0
    )
    swiglu_limit: float = spec_field(..., "swiglu_limit", "SwiGLU clamp (0: none).", ge=0)
    hidden_act: Literal["silu"] = spec_field("silu", "hidden_act", "Expert activation.")


class MTP(_Node):
    num_layers: int = spec_field(
        ..., "num_nextn_predict_layers", "Multi-token-prediction blocks.", ge=0, le=16
    )
    attention: AttentionKind = spec_field(
        "sliding", "compress_ratios", "Attention kind of the MTP blocks (last compress_ratios)."
    )


class Quant(_Node):
    """How the checkpoint stores linear weights (activations are quantised at run time)."""

    weights: Literal["fp8", "bf16"] = spec_field(
        ..., "quantization_config", "Dense linears: FP8 e4m3 with block scales, or plain bf16."
    )
    fmt: Literal["e4m3"] = spec_field("e4m3", "quantization_config.fmt", "FP8 format.")
    scale_fmt: Literal["ue8m0"] = spec_field(
        "ue8m0", "quantization_config.scale_fmt", "Block scales are powers of two (E8M0)."
    )
    block: tuple[int, int] = spec_field(
        (128, 128), "quantization_config.weight_block_size", "FP8 scale block [out, in]."
    )
    activation_scheme: Literal["dynamic"] = spec_field(
        "dynamic", "quantization_config.activation_scheme", "Activation scales per call."
    )
    experts: Literal["fp4", "fp8", "bf16"] | None = spec_field(
        None, "expert_dtype", "Routed experts; null: as `weights` (key absent in config)."
    )
    expert_block: Literal[32] = spec_field(
        32, None, "FP4 experts: one E8M0 scale per this many inputs."
    )

    @property
    def expert_format(self) -> str:
        return self.experts or self.weights


class Meta(_Node):
    """Config keys that do not change the computation; kept so round trips lose nothing."""

    torch_dtype: str = spec_field("bfloat16", "torch_dtype", "Nominal dtype of the release.")
    transformers_version: str | None = spec_field(
        None, "transformers_version", "Version that wrote the config."
    )
    initializer_range: float = spec_field(0.02, "initializer_range", "Init std (training only).")
    use_cache: bool = spec_field(True, "use_cache", "HF generation flag.")
    attention_dropout: float = spec_field(0.0, "attention_dropout", "Training only.", ge=0)


class Parallel(_Node):
    """The default TP × EP split of `v4c compile` and `v4c run` (`--tp/--ep` override it)."""

    tp: int = spec_field(1, None, "Tensor-parallel ranks: attention and indexer heads.", gt=0)
    ep: int = spec_field(1, None, "Expert-parallel ranks: the routed experts.", gt=0)


class ModelSpec(_Node):
    """A whole DeepSeek-V4 model: `v4c spec show` prints it expanded per layer."""

    name: str = spec_field(..., None, "Model name.", min_length=1)
    description: str = spec_field("", None, "One line on what this spec is.")
    vocab_size: int = spec_field(..., "vocab_size", "Embedding and lm_head rows V.", gt=0)
    hidden_size: int = spec_field(..., "hidden_size", "Hidden dim D.", gt=0)
    num_layers: int = spec_field(..., "num_hidden_layers", "Main-model blocks.", gt=0, le=100_000)
    norm_eps: float = spec_field(1e-6, "rms_norm_eps", "RMSNorm epsilon.", gt=0)
    max_position_embeddings: int = spec_field(
        ..., "max_position_embeddings", "Longest supported context.", gt=0
    )
    tie_word_embeddings: Literal[False] = spec_field(
        False, "tie_word_embeddings", "V4 has separate embed and head."
    )
    layers: tuple[PatternItem, ...] = spec_field(
        ...,
        "compress_ratios",
        "Attention kind per layer, with {repeat: N, of: [...]}.",
        min_length=1,
    )
    tokens: Tokens = spec_field(Tokens(), None, "Special token ids.")
    attention: Attention = spec_field(..., None, "Attention dims.")
    rope: Rope = spec_field(..., None, "Rotary embedding.")
    hc: HyperConnections = spec_field(..., None, "Manifold-constrained hyper-connections.")
    moe: MoE = spec_field(..., None, "Mixture of experts.")
    mtp: MTP = spec_field(..., None, "Multi-token prediction.")
    quant: Quant = spec_field(..., None, "Stored-weight quantisation.")
    meta: Meta = spec_field(Meta(), None, "Keys kept for lossless round trips.")
    parallel: Parallel = spec_field(
        Parallel(), None, "Default tensor x expert parallel split (v4c only)."
    )
    pipeline: tuple[str, ...] | None = spec_field(
        None, None, "Pass pipeline for `v4c compile` (null: the default one)."
    )
