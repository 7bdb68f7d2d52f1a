"""kuberlhf trainer: SFT, reward model and PPO on DeepSpeed. See README.md and docs/.

Importing this package is light (no torch): `kuberlhf_trainer.config` is read by the operator's
CRD generator too.
"""

__version__ = "0.1.0"
