"""Generate the RLHFJob CRD from the API types (see hack/generate_crd.py)."""

from .crd import build_crd

__all__ = ["build_crd"]
