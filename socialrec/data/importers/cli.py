"""``python -m socialrec.data.importers``: the command line (docs/importing.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from socialrec.data.importers.core import import_interactions
from socialrec.data.importers.datasets import import_dataset
from socialrec.data.importers.movielens import import_movielens
from socialrec.data.importers.options import CREATOR_ID_SPACES, CREATOR_MODES, TIME_UNITS
from socialrec.timeutil import utc_now


def _parse_event_map(text: str) -> dict[str, Any]:
    """JSON (``{"click": "VIEW", "like": ["VIEW", "LIKE"]}``) or ``click=VIEW,like=VIEW+LIKE``."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        value = value.strip()
        out[key.strip()] = value.split("+") if value else None
    return out


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if not k.endswith("_id_map")}


def _finish(report: dict[str, Any], report_path: str | None) -> None:
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(_summary(report), indent=2, default=str))
    try:
        from socialrec.settings import Settings

        start = Settings().first_event_day
    except Exception:  # noqa: BLE001 - a hint only
        return
    if report["first_day"] < start:
        span = dt.date.fromisoformat(report["last_day"]) - dt.date.fromisoformat(
            report["first_day"]
        )
        fits = dt.date.fromisoformat(start) + span < utc_now().date()
        print(
            f"note: the event partitions start at SOCIALREC_DEMO_START_DATE={start} but the "
            f"log starts on {report['first_day']}: export SOCIALREC_DEMO_START_DATE="
            f"{report['first_day']}" + (f" (or re-import with --shift-to {start})" if fits else ""),
            file=sys.stderr,
        )


def _default_landing() -> str:
    from socialrec.settings import Settings

    return str(Settings().landing_uri)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dataset"]:
        p = argparse.ArgumentParser(
            prog="python -m socialrec.data.importers dataset",
            description="Import a dataset folder (its files + import.json) into the landing "
            "bucket. See docs/importing.md, 'Dataset folders'.",
        )
        p.add_argument("--dir", required=True, help="the folder holding import.json")
        p.add_argument("--landing", help="directory or gs://bucket (default: settings)")
        p.add_argument("--shift-to", help="YYYY-MM-DD: move the log to start on this day")
        p.add_argument("--report", help="write the full JSON report here")
        args = p.parse_args(argv[1:])
        overrides = {"shift_to": args.shift_to} if args.shift_to else {}
        report = import_dataset(args.dir, args.landing or _default_landing(), **overrides)
        _finish(report, args.report)
        return
    if argv[:1] == ["movielens"]:
        p = argparse.ArgumentParser(
            prog="python -m socialrec.data.importers movielens",
            description="Import MovieLens (ml-latest-small layout) into the landing bucket",
        )
        p.add_argument("--dataset-dir", required=True, help="holds ratings/movies/tags.csv")
        p.add_argument("--landing", help="directory or gs://bucket (default: settings)")
        p.add_argument("--shift-to", help="YYYY-MM-DD: move the log to start on this day")
        p.add_argument("--max-tags", type=int, default=20)
        p.add_argument("--report", help="write the full JSON report here")
        args = p.parse_args(argv[1:])
        overrides = {"shift_to": args.shift_to} if args.shift_to else {}
        report = import_movielens(
            args.dataset_dir,
            args.landing or _default_landing(),
            max_tags=args.max_tags,
            **overrides,
        )
        _finish(report, args.report)
        return

    p = argparse.ArgumentParser(
        prog="python -m socialrec.data.importers",
        description="Import an interaction log (CSV/parquet) into the landing bucket. "
        "Subcommands: `dataset --dir FOLDER` imports a dataset folder (import.json), "
        "`movielens --dataset-dir DIR` imports MovieLens. See docs/importing.md.",
    )
    p.add_argument(
        "--interactions", required=True, nargs="+", help="CSV or parquet file(s) of interactions"
    )
    p.add_argument("--items", help="CSV or parquet of items (text, category)")
    p.add_argument("--users", help="CSV or parquet of users (headline, about)")
    p.add_argument("--landing", help="directory or gs://bucket (default: settings)")
    p.add_argument("--options", help="JSON file of ImportOptions; the flags below override it")
    p.add_argument("--report", help="write the full JSON report (with id maps) here")
    flags = {
        "--source": "source",
        "--user-col": "user_col",
        "--item-col": "item_col",
        "--time-col": "time_col",
        "--time-unit": "time_unit",
        "--event-col": "event_col",
        "--event-map": "event_map",
        "--rating-col": "rating_col",
        "--rating-rules": "rating_rules",
        "--row-event": "row_event",
        "--event-flags": "event_flags",
        "--dwell-col": "dwell_col",
        "--items-item-col": "items_item_col",
        "--text-cols": "text_cols",
        "--category-col": "category_col",
        "--category-sep": "category_sep",
        "--creator-col": "creator_col",
        "--creator-ids": "creator_ids",
        "--created-col": "created_col",
        "--created-unit": "created_unit",
        "--media-type": "media_type",
        "--unknown-category": "unknown_category",
        "--users-user-col": "users_user_col",
        "--headline-col": "headline_col",
        "--about-col": "about_col",
        "--creator": "creator",
        "--onboarding-first-n": "onboarding_first_n",
        "--onboarding-top-k": "onboarding_top_k",
        "--shift-to": "shift_to",
        "--csv-sep": "csv_sep",
    }
    helps = {
        "event_map": 'JSON or click=VIEW,like=VIEW+LIKE (a value "" = ignored)',
        "rating_rules": 'JSON list of {"min","max","event"} or a preset: five_star',
        "text_cols": "comma separated",
        "event_flags": "JSON or is_click=VIEW,long_view=VIEW_FULL+VIEW",
        "time_unit": "/".join(TIME_UNITS),
        "created_unit": "/".join(TIME_UNITS),
        "creator_ids": "/".join(CREATOR_ID_SPACES),
        "creator": "/".join(CREATOR_MODES),
    }
    for flag, name in flags.items():
        kind = int if name.startswith("onboarding_") else str
        p.add_argument(flag, dest=name, type=kind, help=helps.get(name))
    args = vars(p.parse_args(argv))
    options: dict[str, Any] = {}
    if args["options"]:
        options = json.loads(Path(args["options"]).read_text())
    for name in flags.values():
        value = args[name]
        if value is None:
            continue
        if name in ("event_map", "event_flags"):
            value = _parse_event_map(value)
        elif name == "rating_rules" and value.strip().startswith("["):
            value = json.loads(value)
        options[name] = value
    files = args["interactions"]
    report = import_interactions(
        files[0] if len(files) == 1 else files,
        args["landing"] or _default_landing(),
        items=args["items"],
        users=args["users"],
        options=options,
    )
    _finish(report, args["report"])
