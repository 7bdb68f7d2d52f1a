"""docs/operator.md keeps up with the code: every spec field and every metric is documented."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from kuberlhf_operator import metrics
from kuberlhf_operator.api import RLHFJobSpec, RLHFJobStatus, StageSpec

DOC = (Path(__file__).resolve().parents[3] / "docs" / "operator.md").read_text()


def _aliases(model) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def test_every_spec_and_status_field_is_in_the_reference():
    for field in [*_aliases(RLHFJobSpec), *_aliases(StageSpec), *_aliases(RLHFJobStatus)]:
        # `field`, `parent.field`, `field.child` or `field[]`, as the tables write them
        mentioned = re.search(rf"`([^`\s]*\.)?{field}(`|\.|\[)", DOC)
        assert mentioned, f"docs/operator.md does not mention {field}"


def test_the_metrics_table_matches_the_metrics_module():
    """Names and help strings: the table is what `# HELP` says."""
    documented = dict(re.findall(r"^\| `(kuberlhf_operator_[a-z_]+)` \|[^|]*\|[^|]*\| (.+?) \|$", DOC, re.M))
    defined = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                suffix = "_total" if family.type == "counter" else ""
                defined[family.name + suffix] = family.documentation
    assert documented == defined
