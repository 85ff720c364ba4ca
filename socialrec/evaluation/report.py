"""The offline evaluation's outputs: markdown tables, the JSON report and two plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from socialrec.evaluation.protocol import METRICS, RECALL_KS, Requests, request_metrics


def fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(
    rows: Mapping[str, Mapping[str, object]], columns: Sequence[str], first="method"
):
    """A GitHub markdown table: one row per key of ``rows``."""
    lines = [
        "| " + " | ".join([first, *columns]) + " |",
        "|" + "---|" + "---:|" * len(columns),
    ]
    for name, row in rows.items():
        lines.append("| " + " | ".join([name, *(fmt(row.get(c, "")) for c in columns)]) + " |")
    return "\n".join(lines)


def segment_table(segments: Mapping[str, Mapping[str, Mapping[str, float]]], segment: str) -> str:
    return markdown_table(segments[segment], [*METRICS, "users", "requests"])


def params_table(params: Mapping[str, Mapping[str, object]]) -> str:
    rows = {
        m: {"parameters": ", ".join(f"{k}={v}" for k, v in p.items()) or "-"}
        for m, p in params.items()
    }
    return markdown_table(rows, ["parameters"])


def _axes():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4), dpi=110)


def _save(fig, ax, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_recall_curves(
    lists: Mapping[str, Sequence[Sequence[int]]], requests: Requests, path: str | Path
) -> Path:
    """Mean recall@K (K = 1..100) of every method over the requests, as a PNG."""
    ks = np.unique(np.linspace(1, max(RECALL_KS), 30).astype(int))
    fig, ax = _axes()
    for method, per_request in lists.items():
        curve = []
        for k in ks:
            vals = [
                len(set(lst[:k]) & {int(p) for p in rel}) / len(rel)
                for lst, rel in zip(per_request, requests.relevant, strict=True)
                if len(rel)
            ]
            curve.append(float(np.mean(vals)) if vals else 0.0)
        ax.plot(ks, curve, label=method)
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K")
    ax.set_title("Test recall@K (replayed requests)")
    return _save(fig, ax, path)


def plot_popularity_bias(
    lists: Mapping[str, Sequence[Sequence[int]]], popularity: Mapping[int, float], path
) -> Path:
    """Share of top-10 slots (y) going to the most popular x% of posts, per method (the
    diagonal would be no popularity preference at all)."""
    order = sorted(popularity, key=lambda i: (-popularity[i], i))
    rank = {p: i for i, p in enumerate(order)}
    n = max(len(order), 1)
    fig, ax = _axes()
    xs = np.linspace(0, 1, 101)
    for method, per_request in lists.items():
        slots = [rank.get(p, n) / n for lst in per_request for p in list(lst)[:10]]
        if not slots:
            continue
        slots = np.sort(np.asarray(slots))
        ax.plot(xs * 100, np.searchsorted(slots, xs, side="right") / len(slots), label=method)
    ax.plot([0, 100], [0, 1], color="grey", lw=0.8, ls="--", label="no preference")
    ax.set_xlabel("most popular x% of posts (by positives before the test)")
    ax.set_ylabel("share of top-10 slots")
    ax.set_title("Popularity bias")
    return _save(fig, ax, path)


__all__ = [
    "markdown_table",
    "params_table",
    "plot_popularity_bias",
    "plot_recall_curves",
    "request_metrics",
    "segment_table",
]
