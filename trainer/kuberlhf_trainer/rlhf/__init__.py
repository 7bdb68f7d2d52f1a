"""Step 3's building blocks, usable for custom pipelines as in DeepSpeed-Chat's blog:

    engine = RLHFEngine(actor_path, critic_path, tokenizer, num_total_iters, config, runtime)
    trainer = PPOTrainer(engine, config.ppo)
    for prompt_batch in prompt_loader:
        experience = trainer.generate_experience(prompt_batch)
        stats = trainer.train_rlhf(experience)
"""

from .engine import RLHFEngine
from .experience import Experience
from .trainer import PPOTrainer

DeepSpeedRLHFEngine = RLHFEngine
DeepSpeedPPOTrainer = PPOTrainer

__all__ = ["RLHFEngine", "PPOTrainer", "Experience", "DeepSpeedRLHFEngine", "DeepSpeedPPOTrainer"]
