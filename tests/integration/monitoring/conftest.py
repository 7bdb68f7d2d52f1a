"""Fixtures for the monitoring tests: the session's control plane (tests/integration/conftest.py),
Prometheus (prometheus.py) and the dashboard's query side (grafana.py)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_TESTS / "unit" / "chart"))  # chart_helm
sys.path.insert(0, str(_TESTS / "integration" / "chart"))  # chart_cluster
