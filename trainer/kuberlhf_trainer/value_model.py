"""A causal-LM backbone with a scalar head: the reward model (step 2) and the critic (step 3).

It gives a value at every position (B, T). The reward model's score for a sequence is the value
at its last token (the EOS after the answer), in every step alike.

Saved in Hugging Face layout: the backbone as a normal model directory (`config.json`,
`model.safetensors`, loadable with `AutoModel`) plus `value_head.safetensors`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .lora_checkpoints import VALUE_HEAD_FILE, resolve_checkpoint
from .models import position_ids



class ValueModel(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        config = backbone.config
        # OPT projects its output to word_embed_proj_dim; other families output hidden_size.
        width = getattr(config, "word_embed_proj_dim", None) or config.hidden_size
        self.v_head = nn.Linear(width, 1, bias=False, dtype=backbone.get_input_embeddings().weight.dtype)

    @property
    def config(self):
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-token values (B, T)."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask), use_cache=False
        ).last_hidden_state
        return self.v_head(hidden).squeeze(-1)

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.backbone.gradient_checkpointing_enable(**kwargs)

    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype = torch.float32) -> "ValueModel":
        from safetensors.torch import load_file
        from transformers import AutoModel

        directory = resolve_checkpoint(str(directory))  # a LoRA adapter output: merged into its base
        model = cls(AutoModel.from_pretrained(directory, dtype=dtype))
        head = Path(directory) / VALUE_HEAD_FILE
        if head.exists():  # absent when starting a reward model from a plain language model
            model.v_head.load_state_dict({"weight": load_file(head)["weight"].to(dtype)})
        return model


def scores_at(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """values (B, T) at one position per row (B,) -> (B,)."""
    return values.gather(1, positions.unsqueeze(1)).squeeze(1)


def save_value_model(backbone: nn.Module, head_weight: torch.Tensor, directory: Path, backbone_state=None) -> None:
    from safetensors.torch import save_file

    backbone.save_pretrained(directory, state_dict=backbone_state, safe_serialization=True)
    save_file({"weight": head_weight.detach().contiguous().cpu()}, str(directory / VALUE_HEAD_FILE))
