"""Pure builders: an RLHFJob (and a stage attempt) in, a Kubernetes manifest out. No API calls."""

from .children import build_child, build_mpijob, build_pytorchjob
from .storage import build_config_map, build_pvc, claim_for

__all__ = ["build_child", "build_config_map", "build_mpijob", "build_pvc", "build_pytorchjob", "claim_for"]
