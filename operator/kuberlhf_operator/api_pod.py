"""Pod-level types of the RLHFJob API: what is passed through to every training pod (scheduling,
identity, pod metadata), as in the core API but only what the operator renders, each bounded and
checked so that the Pod API never refuses a child's pods (the Kubeflow CRDs do not check them)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field

from .api_base import DNS_SUBDOMAIN, LABEL_VALUE, QUALIFIED_NAME, Model, cel_list

class LocalObjectReference(Model):
    """A reference to an object in the same namespace."""

    name: str = Field(..., min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the object.")


class Toleration(Model):
    """A pod toleration, as in the core API."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        {"rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
         "message": "operator Exists matches any value: leave value empty", "fieldPath": ".value"},
        {"rule": "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
         "message": "an empty key matches every taint and needs operator Exists", "fieldPath": ".operator"},
        {"rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
         "message": "tolerationSeconds applies to effect NoExecute only", "fieldPath": ".tolerationSeconds"},
    ]})

    key: Optional[str] = Field(None, max_length=316, pattern=r"^$|" + QUALIFIED_NAME,
                               description="Taint key; empty with Exists matches all.")
    operator: Optional[Literal["Exists", "Equal"]] = Field(None, description="Exists or Equal (default).")
    value: Optional[str] = Field(None, max_length=63, pattern=LABEL_VALUE, description="Taint value for Equal.")
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: Optional[int] = Field(None, description="How long a NoExecute taint is tolerated.")


class PodSecurity(Model):
    """The non-root identity training pods run as (the trainer image must allow it)."""

    run_as_user: int = Field(1000, ge=1, description="UID of the training processes (never root).")
    run_as_group: int = Field(1000, ge=0, description="GID of the training processes.")
    fs_group: int = Field(1000, ge=0, description="Group that owns the mounted storage, so the trainer can write.")


# -- affinity (core/v1 Affinity, as the scheduler reads it) -------------------------------------

LabelKey = Annotated[str, Field(min_length=1, max_length=316, pattern=QUALIFIED_NAME)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]
_VALUES_RULES = [
    {"rule": "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
     "message": "Exists and DoesNotExist take no values", "fieldPath": ".values"},
    {"rule": "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
     "message": "In and NotIn need at least one value", "fieldPath": ".values"},
]


class NodeSelectorRequirement(Model):
    """A node label (or field) and what its value must be."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [*_VALUES_RULES, {
        "rule": "!(self.operator in ['Gt', 'Lt']) || (has(self.values) && size(self.values) == 1"
                " && self.values[0].matches('^-?[0-9]+$'))",
        "message": "Gt and Lt need exactly one integer value", "fieldPath": ".values"}]})

    key: LabelKey = Field(..., description="Node label key (or field name in matchFields).")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        ..., description="In, NotIn, Exists, DoesNotExist, Gt or Lt.")
    values: list[LabelValue] = Field(default_factory=list, max_length=64, description="Values to compare with.")


class NodeSelectorTerm(Model):
    """Node requirements that must all hold."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Requirements on node labels.")
    match_fields: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Requirements on node fields (metadata.name).")


class NodeSelector(Model):
    """Terms of which at least one must hold."""

    node_selector_terms: list[NodeSelectorTerm] = Field(..., min_length=1, max_length=16,
                                                        description="Terms, ORed.")


class PreferredSchedulingTerm(Model):
    """A node preference and its weight."""

    weight: int = Field(..., ge=1, le=100, description="Weight, 1 to 100.")
    preference: NodeSelectorTerm = Field(..., description="The preferred nodes.")


class NodeAffinity(Model):
    """Which nodes training pods may or should run on."""

    required_during_scheduling_ignored_during_execution: Optional[NodeSelector] = Field(
        None, description="Nodes the pods must run on.")
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=16, description="Nodes the pods should run on, by weight.")


class LabelSelectorRequirement(Model):
    """A label and what its value must be."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _VALUES_RULES})

    key: LabelKey = Field(..., description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        ..., description="In, NotIn, Exists or DoesNotExist.")
    values: list[LabelValue] = Field(default_factory=list, max_length=64, description="Values to compare with.")


class LabelSelector(Model):
    """Pods (or namespaces) by their labels."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, description="Labels that must match exactly.",
        json_schema_extra={"maxProperties": 32, "x-kubernetes-validations": [
            {"rule": f"self.all(k, k.matches(r'{QUALIFIED_NAME}'))", "message": "keys are label keys"}]})
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Requirements on labels.")


class PodAffinityTerm(Model):
    """Pods near which (in one topology domain) a training pod should or should not run."""

    label_selector: Optional[LabelSelector] = Field(None, description="The other pods.")
    namespaces: list[Annotated[str, Field(max_length=63, pattern=DNS_SUBDOMAIN)]] = Field(
        default_factory=list, max_length=16, description="Their namespaces; empty: the job's.")
    namespace_selector: Optional[LabelSelector] = Field(None, description="Their namespaces, by label.")
    topology_key: LabelKey = Field(..., description="Node label that defines a domain, e.g. topology.kubernetes.io/zone.")
    match_label_keys: list[LabelKey] = Field(
        default_factory=list, max_length=16, description="Label keys whose values the other pods must share.")
    mismatch_label_keys: list[LabelKey] = Field(
        default_factory=list, max_length=16, description="Label keys whose values the other pods must not share.")


class WeightedPodAffinityTerm(Model):
    """A pod (anti-)affinity preference and its weight."""

    weight: int = Field(..., ge=1, le=100, description="Weight, 1 to 100.")
    pod_affinity_term: PodAffinityTerm = Field(..., description="The term.")


class PodAffinity(Model):
    """Pod affinity or anti-affinity."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=16, description="Terms that must hold.")
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=16, description="Terms that should hold, by weight.")


class Affinity(Model):
    """Node affinity, pod affinity and pod anti-affinity of every training pod, as in a pod."""

    node_affinity: Optional[NodeAffinity] = Field(None, description="Which nodes.")
    pod_affinity: Optional[PodAffinity] = Field(None, description="Near which pods.")
    pod_anti_affinity: Optional[PodAffinity] = Field(None, description="Away from which pods.")


# -- pod metadata --------------------------------------------------------------------------------

# Labels the operator, the Kubeflow operators and the batch Job of an MPIJob's launcher set on pods:
# a user's value would be overwritten, or would break their selectors.
RESERVED_LABEL_PREFIXES = ("kuberlhf.io/", "training.kubeflow.org/", "batch.kubernetes.io/")
RESERVED_LABELS = ("app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "app.kubernetes.io/component",
                   "job-name", "controller-uid")
POD_LABELS = {"maxProperties": 32, "x-kubernetes-validations": [
    {"rule": f"self.all(k, k.matches(r'{QUALIFIED_NAME}'))",
     "message": "keys are label keys: '[prefix/]name', name at most 63 characters"},
    {"rule": f"self.all(k, !(k in {cel_list(RESERVED_LABELS)})"
             + "".join(f" && !k.startsWith('{p}')" for p in RESERVED_LABEL_PREFIXES) + ")",
     "message": "the operators set these labels: not kuberlhf.io/*, training.kubeflow.org/*, batch.kubernetes.io/*, "
                f"{', '.join(RESERVED_LABELS)}"},
]}
POD_ANNOTATIONS = {"maxProperties": 32, "x-kubernetes-validations": [
    {"rule": f"self.all(k, k.matches(r'{QUALIFIED_NAME}'))",
     "message": "keys are qualified names: '[prefix/]name', name at most 63 characters"},
]}
AnnotationValue = Annotated[str, Field(max_length=4096)]
