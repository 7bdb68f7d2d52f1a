"""The RLHF engine: the models of step 3, each held by DeepSpeed as its settings say.

  actor   trainable, starts from the SFT checkpoint (LoRA optional)
  ref     frozen copy of the SFT model: the KL anchor
  critic  trainable value model, starts from the reward model (LoRA optional)
  reward  frozen reward model
  ema     optional exponential moving average of the actor (see ema.py)

As DeepSpeed-Chat's blog API: `RLHFEngine(actor_path, critic_path, tokenizer, num_total_iters, config)`.
"""

from __future__ import annotations

import torch

from .. import engine as ds
from ..config import ModelSettings, RunConfig
from ..engine import Runtime
from ..hybrid_engine import ENGINES, deepspeed_hybrid_config
from ..models import load_causal_lm, zero3_loading
from ..steps.common import TrainableModel, make_trainable
from ..value_model import ValueModel
from .ema import ActorEMA


class RLHFEngine:
    def __init__(self, actor_model_name_or_path: str, critic_model_name_or_path: str, tokenizer, num_total_iters: int,
                 config: RunConfig, runtime: Runtime, load_universal: bool = False):
        self.config, self.runtime, self.tokenizer = config, runtime, tokenizer
        self.load_universal = load_universal  # a checkpoint of another process count will be resumed
        self.dtype = ds.resolve_dtype(config.dtype, runtime)
        ppo = config.ppo
        # PPO compares log-probs of the same weights before and after sampling: dropout would make
        # them disagree, so it is off unless the model settings ask for it (DeepSpeed-Chat: --actor_dropout 0).
        actor_settings = _step3_settings(config.actor_model, actor_model_name_or_path)
        critic_settings = _step3_settings(config.reward_model, critic_model_name_or_path)
        schedule = (ppo.lr_scheduler_type, ppo.num_warmup_steps, num_total_iters)
        betas = (ppo.adam_beta1, ppo.adam_beta2)

        actor_config = self._train_config(actor_settings)
        if ppo.generation.engine == "deepspeed":
            max_out = ppo.max_prompt_seq_len + ppo.max_answer_seq_len
            actor_config["hybrid_engine"] = deepspeed_hybrid_config(ppo.generation, max_out, runtime.is_cuda)
        with zero3_loading(actor_config):
            actor = load_causal_lm(actor_settings, tokenizer, "ppo.actor_checkpoint", self.dtype)
        self.actor: TrainableModel = make_trainable(
            actor, actor_settings, actor_config, ppo.actor_learning_rate, ppo.actor_weight_decay, betas, schedule, runtime
        )
        self.ref = self._frozen(lambda: load_causal_lm(actor_settings, tokenizer, "ppo.actor_checkpoint", self.dtype),
                                actor_settings, ppo.offload_reference_model)

        critic_config = self._train_config(critic_settings)
        with zero3_loading(critic_config):
            critic = ValueModel.from_pretrained(critic_model_name_or_path, self.dtype)
        with torch.no_grad():
            critic.v_head.weight.mul_(ppo.critic_head_scale)
        self.critic: TrainableModel = make_trainable(
            critic, critic_settings, critic_config, ppo.critic_learning_rate, ppo.critic_weight_decay, betas, schedule,
            runtime, keep_trainable=("v_head",),
        )
        self.reward = self._frozen(lambda: ValueModel.from_pretrained(critic_model_name_or_path, self.dtype),
                                   critic_settings, ppo.offload_reward_model)
        self.generation = ENGINES[ppo.generation.engine](
            self.actor.engine, ppo.generation, ppo.max_prompt_seq_len, ppo.max_answer_seq_len, tokenizer,
            actor_settings.zero_stage == 3, runtime.world_size,
        )
        self.ema = ActorEMA(self.actor.engine, ppo.ema.beta, actor_settings.zero_stage == 3) if ppo.ema.enabled else None

    def _train_config(self, settings: ModelSettings) -> dict:
        ppo = self.config.ppo
        return ds.deepspeed_config(
            settings, ppo.per_device_training_batch_size, ppo.gradient_accumulation_steps, self.runtime.world_size,
            self.dtype, ppo.gradient_clipping, load_universal=self.load_universal,
        )

    def _frozen(self, build, trainable_twin: ModelSettings, offload: bool):
        """A frozen model: ZeRO-3 sharded like its trainable twin (or offloaded), else a plain module."""
        if trainable_twin.zero_stage != 3 and not offload:
            return build().to(self.runtime.device).eval().requires_grad_(False)
        config = ds.deepspeed_config(
            trainable_twin, self.config.ppo.per_device_training_batch_size, 1, self.runtime.world_size, self.dtype,
            zero_stage=3, offload=offload,
        )
        with zero3_loading(config):
            model = build().eval().requires_grad_(False)
        return ds.initialize(model, config).module


def _step3_settings(settings: ModelSettings, checkpoint: str) -> ModelSettings:
    """The model settings for step 3: weights from the earlier step's checkpoint, no dropout unless set."""
    dropout = settings.dropout if settings.dropout is not None else 0.0
    return settings.model_copy(update={"name_or_path": checkpoint, "tokenizer": None, "dropout": dropout})
