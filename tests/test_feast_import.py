"""Feast imported through socialrec.features: not instrumented by typeguard at import."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import feast.on_demand_feature_view as m
print("typeguard" in m.OnDemandFeatureView.__init__.__code__.co_names)
"""


def _instrumented(first: str) -> bool:
    code = f"{first}\n{PROBE}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1] == "True"


def test_feast_imported_after_the_features_package_is_not_instrumented():
    assert not _instrumented("import socialrec.features")
    # the probe sees the instrumentation when Feast comes first (nothing to undo then)
    assert _instrumented("import feast")
