"""Generation engines for step 3: the same weights train under ZeRO and generate fast.

Generation is memory-bandwidth bound and, under ZeRO-3, plain `generate` gathers every layer's
parameters from the other processes at every decoded token. `ppo.generation.engine` picks:

  hf         Hugging Face `generate` on the training module itself: the baseline.
  hybrid     ours. On entering generation the actor's weights are gathered once (under ZeRO-3)
             and copied into an inference copy of the model with LoRA merged, which decodes in
             eval mode with a KV cache and no ZeRO hooks. With `decoding` 'compiled' (the default
             on CUDA) the KV cache is static and kept between phases and the decoding step is
             compiled (CUDA graphs on GPU). The training weights are never modified, so switching
             engines does not change the training result. Without ZeRO-3 and LoRA the training
             module is already whole and is used directly. `release_inference_cache` frees the
             copy and the cache after each generation phase: less memory while training, but
             one more allocation per iteration and, with compiled decoding, compiling again.
             Where the copy would not fit (`inference_copy` 'auto', or 'off'), it decodes on
             the training module instead, ZeRO-3 gathering each layer per token as 'hf' does:
             slower, but bounded by ZeRO-3's live-parameter limit. The copy itself is filled a
             bounded share of parameters at a time, never a second whole gathered model.
  deepspeed  DeepSpeed's own hybrid engine (CUDA only: its inference kernels do not exist on CPU).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, Optional

import torch

from .config import ConfigError, GenerationSettings
from .engine import ZERO3_MAX_LIVE_PARAMETERS
from .generation import Rollout, generate
from .models import is_lora_model

log = logging.getLogger(__name__)
# The share of free memory the inference copy and its KV cache may take ('auto'): the rest is
# left for activations while decoding and for the allocator's fragmentation.
INFERENCE_MEMORY_SHARE = 0.8


class GenerationEngine:
    """Answers from the actor for left-padded prompts; subclasses decide how the weights get there."""

    def __init__(self, actor_engine, settings: GenerationSettings, max_prompt_len: int, max_new_tokens: int,
                 tokenizer, zero3: bool, world_size: int):
        self.actor_engine, self.settings = actor_engine, settings
        self.max_prompt_len, self.max_new_tokens = max_prompt_len, max_new_tokens
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.zero3, self.world_size = zero3, world_size

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, greedy: bool = False) -> Rollout:
        raise NotImplementedError


class HFGeneration(GenerationEngine):
    """`generate` on the training module; under ZeRO-3 every token gathers every layer."""

    def generate(self, prompt_ids, prompt_mask, greedy=False):
        return generate(self.actor_engine.module, prompt_ids, prompt_mask, self.max_new_tokens, self.settings,
                        self.eos_id, self.pad_id, synced_gpus=self.zero3 and self.world_size > 1, greedy=greedy)


class HybridGeneration(GenerationEngine):
    """Gather once, merge LoRA into a separate inference copy, decode with a KV cache."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        module = self.actor_engine.module
        self.needs_copy = self.zero3 or is_lora_model(module)  # the training module is not whole or not merged
        self.uses_copy: Optional[bool] = None if self.needs_copy else False  # decided at the first generation
        self._copy: Optional[torch.nn.Module] = None
        self._caches: dict[int, tuple] = {}  # batch size -> (length, static KV cache), kept between phases

    def compiled(self, device: torch.device) -> bool:
        decoding = self.settings.decoding
        return decoding == "compiled" or (decoding == "auto" and device.type == "cuda")

    def generate(self, prompt_ids, prompt_mask, greedy=False):
        if self.uses_copy is None:
            self.uses_copy = self._copy_fits(prompt_ids)
        if self.needs_copy and not self.uses_copy:
            # On the training module: under ZeRO-3 every token gathers each layer, as engine 'hf' does.
            return generate(self.actor_engine.module, prompt_ids, prompt_mask, self.max_new_tokens, self.settings,
                            self.eos_id, self.pad_id, synced_gpus=self.zero3 and self.world_size > 1, greedy=greedy)
        with self._inference_model() as model:
            # No collectives while decoding: each process holds whole weights now.
            extra = self._compiled_decoding(model, prompt_ids) if self.compiled(prompt_ids.device) else {}
            return generate(model, prompt_ids, prompt_mask, self.max_new_tokens, self.settings, self.eos_id,
                            self.pad_id, greedy=greedy, **extra)

    def _compiled_decoding(self, model: torch.nn.Module, prompt_ids: torch.Tensor) -> dict:
        """`generate` arguments that compile the decoding step (CUDA graphs on GPU).

        The static KV cache is sized for the longest prompt plus the longest answer and reused by
        every phase with this batch size: the compiled step then sees tensors of the same shape at
        the same addresses each time, so it compiles (and records its graphs) once, not once per
        phase or per prompt length."""
        from transformers import CompileConfig, StaticCache

        batch, prompt_len = prompt_ids.shape
        length, cache = self._caches.get(batch, (0, None))
        if length < prompt_len + self.max_new_tokens:
            length = max(self.max_prompt_len, prompt_len) + self.max_new_tokens
            cache = StaticCache(config=model.config, max_cache_len=length)
            self._caches[batch] = (length, cache)
        cache.reset()
        on_cuda = prompt_ids.is_cuda
        compile_config = CompileConfig(mode="reduce-overhead" if on_cuda else "default")
        compile_config._compile_all_devices = not on_cuda  # transformers compiles on accelerators only unless told
        return {"cache": cache, "compile_config": compile_config}

    def _copy_fits(self, prompt_ids: torch.Tensor) -> bool:
        """Whether to decode from a whole inference copy (`inference_copy`; 'auto' asks the device).
        Every process must decide alike: without the copy, ZeRO-3 decoding is collective."""
        choice = self.settings.inference_copy
        if choice != "auto":
            return choice == "on"
        module = self.actor_engine.module
        copy = model_bytes(module)
        cache = kv_cache_bytes(module.config, prompt_ids.shape[0], self.max_prompt_len + self.max_new_tokens,
                               next(module.parameters()).dtype)
        free = free_memory_bytes(prompt_ids.device)
        fits = torch.tensor([float(copy + cache <= INFERENCE_MEMORY_SHARE * free)])
        if self.world_size > 1:
            torch.distributed.all_reduce(fits, op=torch.distributed.ReduceOp.MIN)
        chosen = bool(fits.item())
        log.info("Hybrid engine: the inference copy takes %.2f GB and its KV cache %.2f GB, %.2f GB are free: %s "
                 "(ppo.generation.inference_copy)", copy / 1e9, cache / 1e9, free / 1e9,
                 "decoding from a whole copy" if chosen else "decoding on the sharded training module, layer by layer")
        return chosen

    @contextlib.contextmanager
    def _inference_model(self) -> Iterator[torch.nn.Module]:
        model = self._load_weights() if self.needs_copy else self.actor_engine.module
        try:
            yield model
        finally:
            if self.settings.release_inference_cache:
                self._copy, self._caches = None, {}
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def _load_weights(self) -> torch.nn.Module:
        """The inference copy holding the actor's current weights, LoRA merged."""
        module = self.actor_engine.module
        if self._copy is None:
            self._copy = _empty_copy(module)
        elif is_lora_model(self._copy):
            # peft merges only what it has not merged yet: mark the last phase's merge undone first,
            # or every phase after the first would decode the base weights without the adapters.
            self._copy.unmerge_adapter()
        # Gathered a bounded share at a time: the extra memory of switching to generation is the
        # copy plus ZeRO-3's live-parameter limit, never a second whole model.
        for targets, sources in _chunks(list(self._copy.parameters()), list(module.parameters()), ZERO3_MAX_LIVE_PARAMETERS):
            gathered = _gathered(sources) if self.zero3 else contextlib.nullcontext()
            with gathered, torch.no_grad():
                for target, source in zip(targets, sources):
                    target.copy_(source)
        if is_lora_model(self._copy):
            self._copy.merge_adapter()  # into the copy's weights: the training weights stay as they are
        return self._copy


def _chunks(targets: list, sources: list, max_elements: int):
    """(targets, sources) in consecutive groups of at most `max_elements` source elements (a
    larger single parameter makes a group of its own)."""
    start, size = 0, 0
    for index, source in enumerate(sources):
        numel = getattr(source, "ds_numel", source.numel())
        if size and size + numel > max_elements:
            yield targets[start:index], sources[start:index]
            start, size = index, 0
        size += numel
    yield targets[start:], sources[start:]


def model_bytes(module: torch.nn.Module) -> int:
    """Bytes of a whole copy of the module's weights (ZeRO-3 partitioned or not)."""
    return sum(getattr(p, "ds_numel", p.numel()) * p.element_size() for p in module.parameters())


def kv_cache_bytes(config, batch: int, length: int, dtype: torch.dtype) -> int:
    """Bytes of a KV cache for `batch` sequences of `length` tokens."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * batch * length * heads * head_dim * torch.finfo(dtype).bits // 8


def free_memory_bytes(device: torch.device) -> int:
    """Memory this process could still allocate: free device memory plus what PyTorch's caching
    allocator holds unused; on the CPU, the host's available memory shared by its processes."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    import psutil

    return psutil.virtual_memory().available // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _gathered(params):
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def _empty_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A model of the same structure (peft wrapper included) without ZeRO hooks, on the same
    device and in the same dtype, in eval mode; its weights are overwritten before every use."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    base = module.get_base_model() if is_lora_model(module) else module
    device = next(p.device for p in module.parameters())
    dtype = next(p.dtype for p in module.parameters() if p.is_floating_point())
    # Building initialises weights randomly: keep that from moving the RNG that sampling uses.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        copy = AutoModelForCausalLM.from_config(base.config, dtype=dtype)
        if is_lora_model(module):
            copy = get_peft_model(copy, module.peft_config["default"])
    return copy.eval().requires_grad_(False)


class DeepSpeedGeneration(GenerationEngine):
    """DeepSpeed's hybrid engine: the actor's DeepSpeed engine generates itself."""

    def generate(self, prompt_ids, prompt_mask, greedy=False):
        return generate(self.actor_engine, prompt_ids, prompt_mask, self.max_new_tokens, self.settings,
                        self.eos_id, self.pad_id, synced_gpus=self.zero3 and self.world_size > 1, greedy=greedy)


def require_cuda_for_deepspeed_engine(is_cuda: bool) -> None:
    """ConfigError unless CUDA is there: DeepSpeed's hybrid engine cannot run without it."""
    if not is_cuda:
        raise ConfigError(
            "ppo.generation.engine 'deepspeed': DeepSpeed's hybrid engine needs CUDA (its inference kernels "
            "are not implemented for the CPU backend). Use 'hybrid', kuberlhf's own engine, which works everywhere."
        )


def deepspeed_hybrid_config(settings: GenerationSettings, max_out_tokens: int, is_cuda: bool) -> dict:
    """The `hybrid_engine` section of the actor's DeepSpeed config (engine 'deepspeed' only)."""
    require_cuda_for_deepspeed_engine(is_cuda)
    return {
        "enabled": True,
        "max_out_tokens": max_out_tokens,
        "inference_tp_size": settings.inference_tp_size,
        "release_inference_cache": settings.release_inference_cache,
        "pin_parameters": settings.pin_parameters,
        "tp_gather_partition_size": settings.tp_gather_partition_size,
        # DeepSpeed's own CUDA-graph decoding; it falls back to eager decoding, with a warning,
        # under ZeRO-3, release_inference_cache or inference_tp_size > 1.
        "enable_cuda_graph": settings.decoding != "eager",
    }


ENGINES = {"hf": HFGeneration, "hybrid": HybridGeneration, "deepspeed": DeepSpeedGeneration}
