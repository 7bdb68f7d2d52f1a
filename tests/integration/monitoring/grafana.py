"""What Grafana does with charts/kuberlhf/dashboards/kuberlhf.json, done against a real Prometheus:
fill in the variables, run each panel's queries over a time range, and (for the docs) draw them.

Grafana itself is not installable here; its query side is small: `$namespace`/`$job` become the
selected values joined as a regex, `$__rate_interval` is max(step + scrape interval, 4 × scrape
interval), and `label_values(metric{...}, label)` is Prometheus' label-values API.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus import Prometheus

DASHBOARD = Path(__file__).resolve().parents[3] / "charts" / "kuberlhf" / "dashboards" / "kuberlhf.json"
LABEL_VALUES = re.compile(r"^label_values\((?P<match>.+), (?P<label>\w+)\)$")


@dataclass(frozen=True)
class Selection:
    """The dashboard's variables as a user picked them."""

    namespaces: tuple[str, ...]
    jobs: tuple[str, ...]

    def regex(self, values: tuple[str, ...]) -> str:
        # As Grafana's Prometheus data source escapes values: regex metacharacters, written inside
        # a PromQL string (so the backslash itself is doubled).
        return "|".join(re.sub(r"([\\.*+?^${}()|\[\]])", r"\\\\\1", v) for v in values) if values else ".*"


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def rate_interval(step_s: float, scrape_interval_s: float) -> str:
    return f"{int(1000 * max(step_s + scrape_interval_s, 4 * scrape_interval_s))}ms"


def fill(expr: str, selection: Selection, step_s: float, scrape_interval_s: float) -> str:
    return (expr.replace("$__rate_interval", rate_interval(step_s, scrape_interval_s))
            .replace("$namespace", selection.regex(selection.namespaces))
            .replace("$job", selection.regex(selection.jobs)))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def variable_values(prometheus: Prometheus, dashboard: dict[str, Any], name: str, selection: Selection,
                    start: float, end: float) -> list[str]:
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == name)
    query = variable["query"]["query"]
    match = LABEL_VALUES.match(query)
    assert match, f"variable {name}: not a label_values() query: {query}"
    series = fill(match["match"], selection, 1, 1)
    return prometheus.label_values(match["label"], series, start, end)


def run_panel(prometheus: Prometheus, panel: dict[str, Any], selection: Selection, start: float, end: float,
              step_s: float, scrape_interval_s: float) -> list[tuple[str, list[dict]]]:
    """(expression as sent, result) for each of the panel's targets, as a range query."""
    out = []
    for target in panel["targets"]:
        expr = fill(target["expr"], selection, step_s, scrape_interval_s)
        out.append((expr, prometheus.query_range(expr, start, end, step_s)))
    return out


def legend(target: dict[str, Any], metric: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m[1], ""), target.get("legendFormat", "")).strip()


def render_png(prometheus: Prometheus, dashboard: dict[str, Any], selection: Selection, start: float, end: float,
               step_s: float, scrape_interval_s: float, path: Path) -> None:
    """Draw every panel's series from Prometheus in the dashboard's own layout (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    figure = plt.figure(figsize=(24, rows * 0.36))
    figure.suptitle(f"{dashboard['title']} — {', '.join(selection.jobs)} in {', '.join(selection.namespaces)} "
                    "(a tiny CPU run; figures are real, magnitudes are a CPU's)", fontsize=14)
    grid = figure.add_gridspec(rows, 24, hspace=0.0, wspace=2.0, top=0.97, bottom=0.01, left=0.03, right=0.99)
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        if panel["type"] == "row":
            axis = figure.add_subplot(grid[g["y"], :])
            axis.axis("off")
            axis.text(0, 0.2, panel["title"], fontsize=13, weight="bold")
            continue
        # one grid row above for the title, one below for the axis labels
        axis = figure.add_subplot(grid[g["y"] + 1:g["y"] + g["h"] - 1, g["x"]:g["x"] + g["w"]])
        axis.set_title(panel["title"], fontsize=10)
        results = run_panel(prometheus, panel, selection, start, end, step_s, scrape_interval_s)
        if panel["type"] in ("stat", "bargauge"):
            _draw_last_values(axis, panel, results)
        else:
            for target, (_, series) in zip(panel["targets"], results):
                for s in series:
                    times = [float(t) - start for t, _ in s["values"]]
                    axis.plot(times, [float(v) for _, v in s["values"]], label=legend(target, s["metric"]) or "value")
            axis.set_xlabel("seconds", fontsize=8)
            axis.tick_params(labelsize=7)
            if axis.lines:
                axis.legend(fontsize=7, loc="best")
    figure.savefig(path, dpi=60, bbox_inches="tight")
    plt.close(figure)


def _draw_last_values(axis, panel: dict[str, Any], results: list[tuple[str, list[dict]]]) -> None:
    labels, values = [], []
    for target, (_, series) in zip(panel["targets"], results):
        for s in series:
            labels.append(legend(target, s["metric"]) or "value")
            values.append(float(s["values"][-1][1]))
    if panel["type"] == "bargauge":
        axis.barh(labels, values)
        axis.set_xlim(0, 1)
        axis.tick_params(labelsize=8)
    else:
        axis.axis("off")
        text = "\n".join(f"{label}: {value:.3g}" for label, value in zip(labels, values))
        axis.text(0.5, 0.5, text, ha="center", va="center", fontsize=16)
