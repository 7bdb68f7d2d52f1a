"""The `hybrid_engine` section kuberlhf writes for engine 'deepspeed' is one DeepSpeed accepts."""

from __future__ import annotations

import pytest

from kuberlhf_trainer.config import ConfigError, GenerationSettings
from kuberlhf_trainer.hybrid_engine import deepspeed_hybrid_config


def test_every_setting_reaches_deepspeeds_own_config_model():
    from deepspeed.runtime.config import HybridEngineConfig

    settings = GenerationSettings(engine="deepspeed", inference_tp_size=2, tp_gather_partition_size=4,
                                  release_inference_cache=True, pin_parameters=False)
    section = deepspeed_hybrid_config(settings, max_out_tokens=512, is_cuda=True)
    parsed = HybridEngineConfig(**section)  # DeepSpeed's model: refuses unknown fields
    assert parsed.enabled and parsed.max_out_tokens == 512 and parsed.inference_tp_size == 2
    assert parsed.tp_gather_partition_size == 4 and parsed.release_inference_cache and not parsed.pin_parameters
    assert parsed.enable_cuda_graph, "decoding 'auto' asks for DeepSpeed's CUDA graphs"


def test_eager_decoding_turns_deepspeeds_cuda_graphs_off():
    section = deepspeed_hybrid_config(GenerationSettings(engine="deepspeed", decoding="eager"), 512, is_cuda=True)
    assert section["enable_cuda_graph"] is False


def test_without_cuda_the_error_says_why_and_what_to_use():
    with pytest.raises(ConfigError, match="needs CUDA.*Use 'hybrid'"):  # a user error: exit 2, not retried
        deepspeed_hybrid_config(GenerationSettings(engine="deepspeed"), 512, is_cuda=False)
