"""The chart's generated files are what hack/generate_chart.py writes, and values.yaml follows the
conventions the generator relies on: every value documented, every value used.

A failure here means: run `python hack/generate_chart.py` (after `hack/generate_crd.py` if the
types changed) and commit the result.
"""

from __future__ import annotations

import re

import jsonschema
import pytest
import yaml
from chart_helm import CHART, REPO, generator

HINT = "is out of date: run `python hack/generate_chart.py` and commit the result"


@pytest.mark.parametrize("name", ["CRD_TEMPLATE", "SCHEMA", "README", "INSTALL", "MONITORING"])
def test_generated_file_is_up_to_date(name):
    gen = generator()
    path = getattr(gen, name)
    render = gen.FILES[path]
    assert path.exists() and path.read_text() == render(), f"{path.relative_to(REPO)} {HINT}"


def test_every_value_has_a_description_and_every_map_is_closed():
    gen = generator()
    values = gen.parse_values()
    assert all(v.description for v in values)

    def walk(node: dict, path: str = "") -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or 'root'} accepts unknown keys"
            for key, child in node["properties"].items():
                walk(child, f"{path}.{key}".lstrip("."))

    walk(gen.values_schema(values))


def test_an_undocumented_value_is_refused_by_the_generator():
    gen = generator()
    with pytest.raises(gen.ValuesError, match="values.yaml:4: image.flavour has no `# --` comment"):
        gen.parse_values("image:\n  # -- The tag.\n  tag: x\n  flavour: vanilla\n")


def test_the_defaults_satisfy_the_schema():
    schema = generator().values_schema()
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


def test_every_value_is_used_by_a_template():
    templates = "\n".join(p.read_text() for p in (CHART / "templates").iterdir())
    unused = []
    for value in generator().parse_values():
        # `.Values.a.b` directly, or inside `with .Values.a` / through a helper taking `.Values.a`
        parts = value.path.split(".")
        prefixes = [".Values." + ".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        direct = re.search(re.escape(prefixes[0]) + r"\b", templates)
        via_dict = any(re.search(re.escape(p) + r"\b", templates) for p in prefixes[1:]) and \
            re.search(r"\$image\." + re.escape(parts[-1]) + r"\b", templates)
        if not (direct or via_dict):
            unused.append(value.path)
    assert not unused, f"values no template reads: {unused}"


def test_the_install_manifests_are_the_chart_rendered_with_defaults():
    kustomization = yaml.safe_load((REPO / "manifests" / "install" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["namespace.yaml", "kuberlhf.yaml"]
    namespace = yaml.safe_load((REPO / "manifests" / "install" / "namespace.yaml").read_text())
    assert namespace["metadata"]["name"] == generator().INSTALL_NAMESPACE
    kinds = {d["kind"] for d in yaml.safe_load_all(generator().INSTALL.read_text()) if d}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "ServiceAccount"} <= kinds
    monitoring = [d["kind"] for d in yaml.safe_load_all(generator().MONITORING.read_text()) if d]
    assert sorted(monitoring) == ["ConfigMap", "PodMonitor", "ServiceMonitor"]


def test_chart_operator_and_example_images_carry_the_project_version():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == project
    for example in sorted((REPO / "manifests" / "examples").glob("*.yaml")):
        image = yaml.safe_load(example.read_text())["spec"]["image"]
        assert image == f"ghcr.io/kuberlhf/kuberlhf-trainer:{project}", example.name
