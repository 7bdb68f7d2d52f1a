"""Operator settings, read once from the environment (the Deployment sets them)."""

from __future__ import annotations

import os
from typing import Mapping

from pydantic import BaseModel, Field

PREFIX = "KUBERLHF_OPERATOR_"


class OperatorConfig(BaseModel):
    #: Seconds between level-triggered passes over every RLHFJob, on top of the watch events.
    #: It bounds how long a missed event or a failed API call can leave a job unattended.
    resync_seconds: float = Field(60.0, gt=0)
    #: Port of the Prometheus /metrics endpoint; 0 disables it.
    metrics_port: int = Field(8000, ge=0, le=65535)
    #: Threads that run passes (and API connections). Each RLHFJob pass holds one briefly.
    workers: int = Field(32, ge=1)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "OperatorConfig":
        values = {name: environ[PREFIX + name.upper()] for name in cls.model_fields if PREFIX + name.upper() in environ}
        return cls.model_validate(values)
