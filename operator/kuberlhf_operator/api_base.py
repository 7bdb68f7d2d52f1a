"""What every RLHFJob API type shares: the wire convention (camelCase) and the value patterns that
keep strings the operator renders into pods and command lines harmless."""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

Quantity = Union[int, str]
"""A Kubernetes resource quantity such as 8Gi or 500m (the CRD marks it int-or-string)."""

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label value, and a qualified name ('[prefix/]name', e.g. nvidia.com/gpu): label keys, resource
# names, taint keys. Checked here because the Kubeflow CRDs do not check their pod templates: a
# value the Pod API refuses would give a child whose pods never get created.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
QUALIFIED_NAME = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
# Non-negative (the API server's own quantity syntax allows a sign); bounded for the CEL rules' cost.
QUANTITY = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
QUANTITY_EXTRA = {"x-kubernetes-int-or-string": True, "pattern": QUANTITY, "maxLength": 64}
POSITIVE_QUANTITY = {**QUANTITY_EXTRA, "x-kubernetes-validations": [
    {"rule": "quantity(string(self)).isGreaterThan(quantity('0'))", "message": "must be more than 0"}]}
# An absolute path of plain segments: it is mounted into pods and ends up on command lines.
ABSOLUTE_PATH = r"^(/\.?[-_A-Za-z0-9][-._A-Za-z0-9]*)+$"
ABSOLUTE_PATH_HELP = "an absolute path of letters, digits, '-', '_' and '.' (no '.' or '..' segments)"
# Where training pods mount the trainer config and /dev/shm; storage or SSH keys there would collide.
RESERVED_MOUNTS = ("/etc/kuberlhf", "/dev/shm")
# An image reference (registry/repository:tag@digest): no spaces, shell characters or non-ASCII.
IMAGE = r"^[A-Za-z0-9][-A-Za-z0-9._/:@]*$"
# Environment variables the operator or the training-operator sets; the hub token comes only from
# hubTokenSecret, so that its value is never written into an RLHFJob or a child job.
RESERVED_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
RESERVED_ENV_PREFIXES = ("KUBERLHF_", "PET_")


def cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


class Model(BaseModel):
    # camelCase on the wire like every Kubernetes API; snake_case in Python.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
