"""Where each trainable weight of a supported model family lives, addressed by layer, component and head.

Two layouts cover the families the project supports: Llama-style (Llama, Mistral, Qwen2/3,
SmolLM, ... : `model.layers[i].self_attn.q_proj`) and GPT-2-style (`transformer.h[i].attn.c_attn`
with fused QKV in `Conv1D`, whose weight is stored `[in, out]`). Addressing works on the
Hugging Face module both backends wrap, so the two backends address weights identically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from unlearn_lens.errors import ModelSourceError

COMPONENTS = (
    "embed",
    "pos_embed",
    "q",
    "k",
    "v",
    "o",
    "mlp_gate",
    "mlp_up",
    "mlp_down",
    "mlp_in",
    "mlp_out",
    "norm_attn",
    "norm_mlp",
    "final_norm",
    "unembed",
)
"""Every component name a weight key can carry (a model has the subset its family uses)."""


@dataclass(frozen=True)
class ModelShape:
    """The architecture summary that reports and weight addressing need."""

    family: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    vocab_size: int
    tied_embeddings: bool


@dataclass(frozen=True)
class WeightSpec:
    """One addressable tensor: a parameter, or a slice of one along `axis` (fused QKV).

    `key` is the canonical name used everywhere else, e.g. `layers.3.q.weight`;
    `head_axis` is the axis of the (sliced) tensor that is split into `n_heads` equal heads.
    """

    key: str
    layer: int | None
    component: str
    param: str
    axis: int | None = None
    start: int = 0
    stop: int = 0
    head_axis: int | None = None
    n_heads: int = 0

    def view(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The live tensor (a view: writing into it writes the model's weight)."""
        tensor = params[self.param]
        if self.axis is None:
            return tensor
        return tensor.narrow(self.axis, self.start, self.stop - self.start)

    def head_view(self, tensor: torch.Tensor, head: int) -> torch.Tensor:
        """The slice of `tensor` (shaped like this spec's view) that belongs to one head."""
        if self.head_axis is None:
            raise ValueError(f"{self.key} has no attention heads")
        if not 0 <= head < self.n_heads:
            raise ValueError(f"{self.key} has {self.n_heads} heads, no head {head}")
        size = tensor.shape[self.head_axis] // self.n_heads
        return tensor.narrow(self.head_axis, head * size, size)


BRIDGE_WRAPPER = "._original_component"
"""Path segment a `TransformerBridge` inserts when it wraps a HF module in place."""


READOUT_MODULES = {"llama": ("model.norm", "lm_head"), "gpt2": ("transformer.ln_f", "lm_head")}
"""Final norm and unembedding of each supported family, as module paths in the HF model."""


def hf_module(model: nn.Module, path: str) -> nn.Module:
    """A submodule by dotted path, unwrapped from a TransformerBridge component if wrapped."""
    module = model.get_submodule(path)
    return getattr(module, BRIDGE_WRAPPER.lstrip("."), module)


def named_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters under their Hugging Face names, tied duplicates included.

    A TransformerBridge wraps the model's modules in place; stripping its wrapper segment gives
    the same names whether or not a bridge was booted on the model.
    """
    return {
        name.replace(BRIDGE_WRAPPER, ""): param
        for name, param in model.named_parameters(remove_duplicate=False)
    }


def detect_family(params: dict[str, nn.Parameter], model_type: str = "unknown") -> str:
    """`"llama"` or `"gpt2"` by parameter layout, or a clear error for anything else."""
    if (
        "model.layers.0.self_attn.q_proj.weight" in params
        and "model.layers.0.mlp.down_proj.weight" in params
    ):
        return "llama"
    if "transformer.h.0.attn.c_attn.weight" in params:
        return "gpt2"
    raise ModelSourceError(
        f"unsupported model architecture {model_type!r}: unlearn_lens addresses weights of Llama-style "
        "(Llama, Mistral, Qwen, SmolLM) and GPT-2-style models"
    )


def layers_path(family: str) -> str:
    """Dotted path of the list of transformer blocks."""
    return {"llama": "model.layers", "gpt2": "transformer.h"}[family]


def model_shape(model: PreTrainedModel) -> ModelShape:
    """Layers, heads, widths and tying read from the model's config and parameters."""
    config = model.config
    params = named_parameters(model)
    family = detect_family(params, getattr(config, "model_type", type(model).__name__))
    if family == "llama":
        n_heads = config.num_attention_heads
        d_model = config.hidden_size
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        d_head = getattr(config, "head_dim", None) or d_model // n_heads
        n_layers = config.num_hidden_layers
        embed = params["model.embed_tokens.weight"]
    else:
        n_heads = config.n_head
        d_model = config.n_embd
        n_kv = n_heads
        d_head = d_model // n_heads
        n_layers = config.n_layer
        embed = params["transformer.wte.weight"]
    return ModelShape(
        family=family,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_model=d_model,
        d_head=d_head,
        vocab_size=embed.shape[0],
        tied_embeddings=params.get("lm_head.weight") is embed,
    )


def _add(specs: list[WeightSpec], params: dict[str, nn.Parameter], spec: WeightSpec) -> None:
    if spec.param in params:
        specs.append(spec)


def _llama_specs(shape: ModelShape, params: dict[str, nn.Parameter]) -> list[WeightSpec]:
    specs: list[WeightSpec] = []
    _add(specs, params, WeightSpec("embed.weight", None, "embed", "model.embed_tokens.weight"))
    heads = {"q": shape.n_heads, "k": shape.n_kv_heads, "v": shape.n_kv_heads}
    for layer in range(shape.n_layers):
        prefix = f"model.layers.{layer}"
        for comp, n in heads.items():
            for kind in ("weight", "bias"):
                param = f"{prefix}.self_attn.{comp}_proj.{kind}"
                _add(
                    specs,
                    params,
                    WeightSpec(
                        f"layers.{layer}.{comp}.{kind}", layer, comp, param, head_axis=0, n_heads=n
                    ),
                )
        _add(
            specs,
            params,
            WeightSpec(
                f"layers.{layer}.o.weight",
                layer,
                "o",
                f"{prefix}.self_attn.o_proj.weight",
                head_axis=1,
                n_heads=shape.n_heads,
            ),
        )
        _add(
            specs,
            params,
            WeightSpec(f"layers.{layer}.o.bias", layer, "o", f"{prefix}.self_attn.o_proj.bias"),
        )
        for comp, name in (
            ("mlp_gate", "gate_proj"),
            ("mlp_up", "up_proj"),
            ("mlp_down", "down_proj"),
        ):
            for kind in ("weight", "bias"):
                _add(
                    specs,
                    params,
                    WeightSpec(
                        f"layers.{layer}.{comp}.{kind}", layer, comp, f"{prefix}.mlp.{name}.{kind}"
                    ),
                )
        for comp, name in (
            ("norm_attn", "input_layernorm"),
            ("norm_mlp", "post_attention_layernorm"),
        ):
            for kind in ("weight", "bias"):
                _add(
                    specs,
                    params,
                    WeightSpec(
                        f"layers.{layer}.{comp}.{kind}", layer, comp, f"{prefix}.{name}.{kind}"
                    ),
                )
    _add(specs, params, WeightSpec("final_norm.weight", None, "final_norm", "model.norm.weight"))
    _add(specs, params, WeightSpec("final_norm.bias", None, "final_norm", "model.norm.bias"))
    if not shape.tied_embeddings:
        _add(specs, params, WeightSpec("unembed.weight", None, "unembed", "lm_head.weight"))
    return specs


def _gpt2_specs(shape: ModelShape, params: dict[str, nn.Parameter]) -> list[WeightSpec]:
    specs: list[WeightSpec] = []
    d = shape.d_model
    _add(specs, params, WeightSpec("embed.weight", None, "embed", "transformer.wte.weight"))
    _add(specs, params, WeightSpec("pos_embed.weight", None, "pos_embed", "transformer.wpe.weight"))
    for layer in range(shape.n_layers):
        prefix = f"transformer.h.{layer}"
        for index, comp in enumerate(("q", "k", "v")):
            # Conv1D stores [in, out]: the fused QKV output is split along axis 1 (bias: axis 0).
            _add(
                specs,
                params,
                WeightSpec(
                    f"layers.{layer}.{comp}.weight",
                    layer,
                    comp,
                    f"{prefix}.attn.c_attn.weight",
                    axis=1,
                    start=index * d,
                    stop=(index + 1) * d,
                    head_axis=1,
                    n_heads=shape.n_heads,
                ),
            )
            _add(
                specs,
                params,
                WeightSpec(
                    f"layers.{layer}.{comp}.bias",
                    layer,
                    comp,
                    f"{prefix}.attn.c_attn.bias",
                    axis=0,
                    start=index * d,
                    stop=(index + 1) * d,
                    head_axis=0,
                    n_heads=shape.n_heads,
                ),
            )
        _add(
            specs,
            params,
            WeightSpec(
                f"layers.{layer}.o.weight",
                layer,
                "o",
                f"{prefix}.attn.c_proj.weight",
                head_axis=0,
                n_heads=shape.n_heads,
            ),
        )
        _add(
            specs,
            params,
            WeightSpec(f"layers.{layer}.o.bias", layer, "o", f"{prefix}.attn.c_proj.bias"),
        )
        for comp, name in (("mlp_in", "c_fc"), ("mlp_out", "c_proj")):
            for kind in ("weight", "bias"):
                _add(
                    specs,
                    params,
                    WeightSpec(
                        f"layers.{layer}.{comp}.{kind}", layer, comp, f"{prefix}.mlp.{name}.{kind}"
                    ),
                )
        for comp, name in (("norm_attn", "ln_1"), ("norm_mlp", "ln_2")):
            for kind in ("weight", "bias"):
                _add(
                    specs,
                    params,
                    WeightSpec(
                        f"layers.{layer}.{comp}.{kind}", layer, comp, f"{prefix}.{name}.{kind}"
                    ),
                )
    for kind in ("weight", "bias"):
        _add(
            specs,
            params,
            WeightSpec(f"final_norm.{kind}", None, "final_norm", f"transformer.ln_f.{kind}"),
        )
    if not shape.tied_embeddings:
        _add(specs, params, WeightSpec("unembed.weight", None, "unembed", "lm_head.weight"))
    return specs


def weight_specs(model: nn.Module, shape: ModelShape) -> list[WeightSpec]:
    """Every trainable tensor of `model`, each once (tied embeddings appear as `embed` only)."""
    params = named_parameters(model)
    build = {"llama": _llama_specs, "gpt2": _gpt2_specs}[shape.family]
    return build(shape, params)
