"""Loading tokenizers and models: hub names, local directories and tiny built-in models.

`builtin:<family>-<size>` builds a randomly initialised model from a small config (no
download), e.g. `builtin:llama-tiny` for the embedded default and tests, `builtin:opt-30m` for
CPU benchmarks. `builtin:char` is a character-level tokenizer over printable ASCII, built in
code; it suits the synthetic task and English samples.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .config import LoraSettings, ModelSettings
from .lora_checkpoints import resolve_checkpoint

BUILTIN = "builtin:"
CHAR_TOKENIZER = "builtin:char"

# Small model shapes per family. Vocabulary size comes from the tokenizer.
_PRESETS: dict[str, dict[str, dict]] = {
    "llama": {
        "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4),
        "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8),
        "30m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8),
    },
    "opt": {
        "tiny": dict(hidden_size=64, ffn_dim=256, num_hidden_layers=3, num_attention_heads=4, word_embed_proj_dim=64),
        "small": dict(hidden_size=256, ffn_dim=1024, num_hidden_layers=4, num_attention_heads=8, word_embed_proj_dim=256),
        "30m": dict(hidden_size=512, ffn_dim=2048, num_hidden_layers=8, num_attention_heads=8, word_embed_proj_dim=512),
        # The shapes of DeepSpeed-Chat's benchmark models (random weights), for GPU benchmarks.
        "350m": dict(hidden_size=1024, ffn_dim=4096, num_hidden_layers=24, num_attention_heads=16, word_embed_proj_dim=512),
        "1.3b": dict(hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32, word_embed_proj_dim=2048),
    },
    "gpt2": {
        "tiny": dict(n_embd=64, n_layer=3, n_head=4),
        "small": dict(n_embd=256, n_layer=4, n_head=8),
        "30m": dict(n_embd=512, n_layer=8, n_head=8),
    },
}
_MAX_POSITIONS = 1024
_DROPOUT_FIELDS = ("dropout", "attention_dropout", "activation_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")


class ModelLoadError(RuntimeError):
    """A model or tokenizer that cannot be loaded; the message names the config field."""


def builtin_names() -> list[str]:
    return [f"{BUILTIN}{family}-{size}" for family, sizes in _PRESETS.items() for size in sizes]


# -- tokenizers ----------------------------------------------------------------------------------


def char_tokenizer():
    """Character-level tokenizer: <pad> <s> </s> <unk>, printable ASCII, newline and tab."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(specials + alphabet)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
    core.decoder = decoders.Fuse()  # join characters back without spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def load_tokenizer(name: str, field: str = "tokenizer"):
    """A tokenizer with an EOS token and a pad token (EOS when the tokenizer has none), padding right."""
    if name == CHAR_TOKENIZER or name.startswith(BUILTIN):
        tokenizer = char_tokenizer()
    else:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{field}: cannot load tokenizer '{name}': {error}") from None
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"{field}: tokenizer '{name}' has no EOS token; answers could not end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def tokenizer_for(settings: ModelSettings, field: str):
    return load_tokenizer(settings.tokenizer or settings.name_or_path, f"{field}.tokenizer")


# -- models --------------------------------------------------------------------------------------


def builtin_config(name: str, vocab_size: int, tokenizer=None):
    """The transformers config of a `builtin:<family>-<size>` model."""
    from transformers import AutoConfig

    family, _, size = name.removeprefix(BUILTIN).partition("-")
    if family not in _PRESETS or size not in _PRESETS[family]:
        raise ModelLoadError(f"unknown built-in model '{name}'; choose one of {builtin_names()}")
    special = {}
    if tokenizer is not None:
        special = dict(
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
        )
    positions = {"gpt2": "n_positions"}.get(family, "max_position_embeddings")
    return AutoConfig.for_model(family, vocab_size=vocab_size, **{positions: _MAX_POSITIONS}, **_PRESETS[family][size], **special)


def model_config(settings: ModelSettings, tokenizer, field: str):
    """The model's config with the dropout override applied."""
    from transformers import AutoConfig

    if settings.name_or_path.startswith(BUILTIN):
        config = builtin_config(settings.name_or_path, len(tokenizer), tokenizer)
    else:
        try:
            config = AutoConfig.from_pretrained(resolve_checkpoint(settings.name_or_path))
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{field}.name_or_path: cannot load '{settings.name_or_path}': {error}") from None
    if settings.dropout is not None:
        for key in _DROPOUT_FIELDS:
            if hasattr(config, key):
                setattr(config, key, settings.dropout)
    return config


def load_pretrained(model_class, settings: ModelSettings, tokenizer, field: str, dtype: torch.dtype = torch.float32):
    """`model_class` (AutoModelForCausalLM or AutoModel) from the hub, a directory or a builtin config."""
    config = model_config(settings, tokenizer, field)
    if settings.name_or_path.startswith(BUILTIN):
        model = model_class.from_config(config, dtype=dtype)
    else:
        try:
            model = model_class.from_pretrained(resolve_checkpoint(settings.name_or_path), config=config, dtype=dtype)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{field}.name_or_path: cannot load '{settings.name_or_path}': {error}") from None
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return model


def load_causal_lm(settings: ModelSettings, tokenizer, field: str, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    return load_pretrained(AutoModelForCausalLM, settings, tokenizer, field, dtype)


@contextlib.contextmanager
def zero3_loading(ds_config: dict) -> Iterator[None]:
    """Let `from_pretrained` build parameters already partitioned under ZeRO-3 (no full copy per rank)."""
    if ds_config.get("zero_optimization", {}).get("stage") != 3:
        yield
        return
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config

    keep_alive = HfDeepSpeedConfig(ds_config)  # transformers holds only a weak reference
    try:
        yield
    finally:
        del keep_alive
        unset_hf_deepspeed_config()


# -- LoRA ----------------------------------------------------------------------------------------


def apply_lora(model, lora: LoraSettings, keep_trainable: tuple[str, ...] = ()):
    """Wrap `model` with peft LoRA adapters; returns the wrapped model.

    With `only_optimize` only the adapters (and parameters whose names contain one of
    `keep_trainable`, e.g. a value head) train. Otherwise, as DeepSpeed-Chat does, the adapted
    linear weights are frozen (LoRA learns their change) and everything else still trains.
    """
    from peft import LoraConfig, get_peft_model

    from .value_model import ValueModel

    if isinstance(model, ValueModel):  # adapt the backbone; the scalar head always trains
        model.backbone = apply_lora(model.backbone, lora, keep_trainable)
        model.v_head.requires_grad_(True)
        return model
    peft_config = LoraConfig(
        r=lora.dim,
        lora_alpha=lora.alpha if lora.alpha is not None else lora.dim,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules or "all-linear",
        bias="none",
    )
    wrapped = get_peft_model(model, peft_config)
    for name, param in wrapped.named_parameters():
        is_lora = "lora_" in name
        is_adapted_base = ".base_layer." in name
        keep = any(k in name for k in keep_trainable)
        param.requires_grad = is_lora or keep or (not lora.only_optimize and not is_adapted_base)
    return wrapped


def lora_scaling(lora: LoraSettings) -> float:
    return (lora.alpha if lora.alpha is not None else lora.dim) / lora.dim


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """The modules in eval mode inside the block, each back in its own mode after.

    Sampling and scoring run in eval mode (no dropout, no activation recomputation); training
    runs in train mode. A model from `from_pretrained` starts in eval mode, so the steps set
    train mode themselves (make_trainable) and use this block for everything that is not training."""
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as `generate` counts them: left padding must
    not shift the positions a model sees between sampling and scoring."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def count_parameters(model) -> tuple[int, int]:
    """(total, trainable) parameter counts; under ZeRO-3 uses each parameter's full size."""
    total = trainable = 0
    for param in model.parameters():
        size = getattr(param, "ds_numel", param.numel())
        total += size
        trainable += size if param.requires_grad else 0
    return total, trainable


def is_lora_model(model) -> bool:
    """A peft-wrapped model (for a ValueModel: its backbone)."""
    return hasattr(getattr(model, "backbone", model), "peft_config")
