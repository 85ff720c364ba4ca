"""The service's readiness (``GET /readyz``, through ``Endpoints.readiness_report``): which
dependencies answer their probe, and whether the service is ready.

Not ready (503): a model is not loaded, or one of :data:`UNREADY_WHEN_DOWN` — Milvus, the seen
store, the Feast online store — does not answer (also when it was down at start: the service
starts anyway, answers ``/recommend`` with fallbacks and picks the store up when it is back,
see ``socialrec.serving.errors.Guarded.reopening``). The event spool (its landing bucket) is
reported, never a reason: accepted events wait on local disk. Every degraded dependency is
reported either way, ``{"milvus": why, "feature_store": why, ...}``. The trade-off (a shared
dependency down makes every pod unready) is in ``docs/operations.md``, "Readiness"."""

from __future__ import annotations

from typing import Any

from socialrec.serving.errors import DependencyError

# the dependencies without which /readyz is 503 (the spool and the landing bucket: reported)
UNREADY_WHEN_DOWN = ("milvus", "seen_store", "feature_store")


def degraded(endpoints: Any) -> dict[str, str]:
    """Every dependency of ``endpoints`` that fails its probe, with why: ``milvus`` (a one-row
    query through each alias), ``seen_store`` (one lookup), ``feature_store`` (one user's
    online features), ``spool`` (``Endpoints.spool_note``). A reopening store that waits to
    reopen fails at once (its last outage)."""
    out: dict[str, str] = {}
    s = endpoints.settings
    for alias in (s.collection_alias, s.text_collection_alias):
        try:
            endpoints.index.ping(alias)
        except Exception as exc:  # noqa: BLE001 - an outage or not (no alias yet): degraded
            out.setdefault("milvus", f"milvus alias {alias!r}: {exc}")
    probes = {
        "seen_store": (endpoints.seen_store, lambda store: store.negatives(-1)),
        "feature_store": (endpoints.features, lambda features: features.users([-1])),
    }
    for name, (part, probe) in probes.items():
        if part is None:
            continue
        try:
            probe(part)
        except Exception as exc:  # noqa: BLE001 - whatever fails, the dependency is degraded
            out[name] = str(exc) if isinstance(exc, DependencyError) else f"{name}: {exc!r}"
    note = endpoints.spool_note()
    if note:
        out["spool"] = note
    return out


def readiness_report(endpoints: Any) -> tuple[str | None, dict[str, str]]:
    """(why the service is not ready — None: ready —, :func:`degraded`)."""
    if endpoints.two_tower is None or endpoints.ranker is None or endpoints.catalog is None:
        return "models not loaded", {}
    if endpoints.text_encoder is None:
        return "text encoder not loaded", {}
    found = degraded(endpoints)
    reasons = [why for name, why in found.items() if name in UNREADY_WHEN_DOWN]
    return "; ".join(reasons) or None, found
