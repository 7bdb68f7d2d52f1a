"""An RLHFJob as the pure functions see it: parsed once from the raw object the API server sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pydantic import ValidationError

from .api import RLHFJobSpec, RLHFJobStatus
from .names import API_VERSION, KIND, STAGES


class InvalidSpec(ValueError):
    """The object does not parse (only possible if it bypassed the CRD's schema). `errors` are
    (field, message) pairs, fields written as in the API server's messages: spec.stages.sft.nodes."""

    def __init__(self, message: str, errors: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.errors = list(errors)


@dataclass(frozen=True)
class Job:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: RLHFJobSpec
    status: RLHFJobStatus
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    finalizers: tuple[str, ...] = ()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Job":
        meta = body.get("metadata", {})
        errors: list[tuple[str, str]] = []
        try:
            spec = RLHFJobSpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            errors += [(_field(("spec", *e["loc"])), e["msg"]) for e in error.errors()]
        try:
            status = RLHFJobStatus.model_validate(body.get("status") or {})
        except ValidationError as error:
            errors += [(_field(("status", *e["loc"])), e["msg"]) for e in error.errors()]
        if errors:
            text = "; ".join(f"{f}: {m}" for f, m in errors)
            raise InvalidSpec(f"{KIND} {meta.get('namespace')}/{meta.get('name')}: {text}", errors)
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace", "default"),
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0)),
            spec=spec,
            status=status,
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            finalizers=tuple(meta.get("finalizers") or ()),
        )

    @property
    def selected_stages(self) -> tuple[str, ...]:
        """config.steps, in pipeline order (the API server has checked the order)."""
        steps = self.spec.config.get("steps") or STAGES
        return tuple(s for s in STAGES if s in steps)

    @property
    def output_dir(self) -> str:
        """The trainer's --output_dir: stage k writes <output_dir>/<stage>/, stage k+1 reads it."""
        return f"{self.spec.storage.mount_path.rstrip('/')}/{self.name}"

    def checkpoint_path(self, stage: str) -> str:
        return f"{self.output_dir}/{stage}"

    @property
    def owner_reference(self) -> dict[str, Any]:
        """Controller reference: garbage collection deletes children with the job where a GC runs."""
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def _field(loc: Sequence[Any]) -> str:
    """('spec', 'env', 0, 'name') -> spec.env[0].name"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
