"""Importer presets and entry points (socialrec/data/importers): MovieLens, the load into the
warehouse with zero quarantine, the command line and dataset folders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from socialrec.data import importers, warehouse
from socialrec.data.importers import ImportOptions, import_interactions
from socialrec.data.landing import LocalLandingBucket
from socialrec.settings import Settings
from tests.importing import (
    NOW,
    RATING_OPTS,
    T0,
    WIDE_OPTS,
    assert_loads_cleanly,
    landed,
    ratings_csv,
    wide_log,
    write_fake_movielens,
)


def test_movielens_mapping_on_a_fake_dataset_loads_without_quarantine(tmp_path):
    d = tmp_path / "ml"
    write_fake_movielens(d)
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    report = importers.import_movielens(d, bucket, now=NOW)
    assert report["events_by_type"] == {"VIEW": 5, "LIKE": 2, "DISLIKE": 2}
    assert (report["posts"], report["catalog_items_without_events"]) == (3, 1)
    assert report["users"] == 3 + 3  # 3 raters + one creator per first genre
    cats = {c["name"]: c["category_id"] for c in landed(bucket, "categories")}
    assert set(cats) == {"Adventure", "Comedy", "(no genres listed)"}
    posts = {p["post_id"]: p for p in landed(bucket, "posts")}
    assert posts[1]["description"] == (
        "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. "
        "Tags: pixar, fun"
    )
    assert posts[11]["description"].startswith("American President, The (1995). Genres: Comedy")
    assert posts[21]["description"] == "Nothing (2000)"
    assert posts[11]["category_id"] == cats["Comedy"] and posts[1]["media_type"] == "video"
    assert posts[1]["created_at"] == "2000-07-30T18:45:03Z"
    assert {e["event_id"] for e in landed(bucket, "events") if e["user_id"] == 3} == {
        "movielens-4-VIEW",
        "movielens-4-DISLIKE",
    }
    assert_loads_cleanly(settings, bucket, report)


def test_landing_files_load_into_the_warehouse_with_zero_quarantine(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    log = pd.DataFrame(
        {
            "u": [f"user-{i % 7}" for i in range(60)],
            "i": [f"item-{i % 11}" for i in range(60)],
            "t": [T0 * 1000 + i * 3_600_000 + 7 for i in range(60)],
            "e": ["click", "like", "skip", "report"] * 15,
            "d": [float(i * 100) if i % 3 else None for i in range(60)],
        }
    )
    items = pd.DataFrame(
        {
            "i": [f"item-{k}" for k in range(11)],
            "title": [f'Item {k} about "quotes", commas\nand newlines é' for k in range(11)],
            "tags": ["a;b", "b", None, "c;a", ";", "a", "b", "c", "a", "b", "c"],
        }
    )
    report = import_interactions(
        log,
        bucket,
        items=items,
        options={
            "source": "app",
            "user_col": "u",
            "item_col": "i",
            "time_col": "t",
            "time_unit": "ms",
            "event_col": "e",
            "event_map": {
                "click": ["IMPRESSION", "VIEW"],
                "like": "LIKE",
                "skip": "IMPRESSION",
                "report": ["DISLIKE", "REPORT"],
            },
            "dwell_col": "d",
            "text_cols": ["title", "tags"],
            "category_col": "tags",
            "category_sep": ";",
            "media_type": "image",
            "rows_per_file": 20,
        },
        now=NOW,
    )
    assert report["events"] == 15 * (2 + 1 + 1 + 2) and report["event_days"] == 3
    assert_loads_cleanly(settings, bucket, report)
    users = warehouse.read_table(settings, "raw.users")
    assert users["onboarding_categories"].str.len().gt(0).sum() >= 7


def test_cli_generic_and_movielens(tmp_path, capsys):
    path = ratings_csv(tmp_path, [(1, 10, 5, T0), (2, 10, 1, T0 + 5)])
    options = tmp_path / "opts.json"
    options.write_text(json.dumps({**RATING_OPTS, "rating_rules": "five_star"}))
    importers.main(
        [
            "--interactions",
            path,
            "--options",
            str(options),
            "--landing",
            str(tmp_path / "a"),
            "--source",
            "cli",
            "--report",
            str(tmp_path / "report.json"),
        ]
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["source"] == "cli" and report["events"] == 4
    assert '"events": 4' in capsys.readouterr().out
    importers.main(
        [
            "--interactions",
            path,
            "--user-col",
            "user",
            "--item-col",
            "item",
            "--time-col",
            "ts",
            "--rating-col",
            "rating",
            "--rating-rules",
            '[{"min": 3, "event": "LIKE"}]',
            "--landing",
            str(tmp_path / "b"),
        ]
    )
    assert [e["event_id"] for e in landed(LocalLandingBucket(tmp_path / "b"), "events")] == [
        "import-0-LIKE"
    ]
    assert importers._parse_event_map("click=VIEW,like=VIEW+LIKE,hover=") == {
        "click": ["VIEW"],
        "like": ["VIEW", "LIKE"],
        "hover": None,
    }
    write_fake_movielens(tmp_path / "ml")
    importers.main(
        ["movielens", "--dataset-dir", str(tmp_path / "ml"), "--landing", str(tmp_path / "c")]
    )
    assert len(landed(LocalLandingBucket(tmp_path / "c"), "posts")) == 3


def test_cli_wide_log_from_two_files(tmp_path):
    log = wide_log()
    log.iloc[:2].to_parquet(tmp_path / "a.parquet")
    log.iloc[2:].to_parquet(tmp_path / "b.parquet")
    importers.main(
        ["--interactions", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
        + ["--user-col", "uid", "--item-col", "vid", "--time-col", "t", "--time-unit", "ms"]
        + ["--row-event", "IMPRESSION", "--event-flags", "is_click=VIEW,hate=DISLIKE"]
        + ["--creator", "none", "--landing", str(tmp_path / "l")]
    )
    lines = landed(LocalLandingBucket(tmp_path / "l"), "events")
    assert sorted(e["event_id"] for e in lines if e["event_type"] != "IMPRESSION") == [
        "import-0-VIEW",
        "import-2-DISLIKE",
        "import-3-VIEW",
    ]
    assert {p["creator_id"] for p in landed(LocalLandingBucket(tmp_path / "l"), "posts")} == {None}


def _dataset_folder(root, config: dict):
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    log = wide_log()
    log.iloc[:3].to_parquet(root / "data" / "part-0.parquet")
    log.iloc[3:].to_csv(root / "data" / "part-1.csv", index=False)
    pd.DataFrame(
        {"vid": [10, 11, 12], "title": ["Ten", "", "Twelve"], "up": ["2025-12-31"] * 3}
    ).to_csv(root / "items.csv", index=False)
    (root / importers.CONFIG_FILE).write_text(json.dumps(config))
    return root


DATASET = {
    "name": "tiny-feed",
    "interactions": ["data/part-0.parquet", "data/part-1.csv"],
    "items": "items.csv",
    "options": {
        **{k: v for k, v in WIDE_OPTS.items() if k != "source"},
        "items_item_col": "vid",
        "text_cols": ["title"],
        "created_col": "up",
        "creator": "none",
        "onboarding_first_n": 0,
    },
}


def test_import_dataset_folder(tmp_path):
    folder = _dataset_folder(tmp_path / "tiny", DATASET)
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    report = importers.import_dataset(folder, bucket, now=NOW)
    assert report["name"] == report["source"] == "tiny-feed"  # no source option: the name
    assert (report["first_day"], report["last_day"]) == ("2026-01-01", "2026-01-01")
    assert report["interaction_files"] == 2 and report["events"] == 11
    assert report["created_at_fallback"] == {"missing": 0, "after_first_event": 0}
    assert all(u["onboarding_categories"] == [] for u in landed(bucket, "users"))
    assert_loads_cleanly(settings, bucket, report, created_col=True)
    # the same log as import_interactions on the tables: the same files
    same = LocalLandingBucket(tmp_path / "same")
    import_interactions(
        wide_log(),
        same,
        items=folder / "items.csv",
        options={**DATASET["options"], "source": "tiny-feed"},
        now=NOW,
    )
    assert {b.key: same.read_bytes(b.key) for b in same.list()} == {
        b.key: bucket.read_bytes(b.key) for b in bucket.list()
    }
    # absolute paths, an options override, and the CLI
    absolute = {**DATASET, "items": str(folder / "items.csv"), "name": "abs"}
    other = _dataset_folder(tmp_path / "abs", absolute)
    importers.main(
        ["dataset", "--dir", str(other), "--landing", str(tmp_path / "cli")]
        + ["--shift-to", "2026-02-01", "--report", str(tmp_path / "r.json")]
    )
    cli_report = json.loads((tmp_path / "r.json").read_text())
    assert (cli_report["name"], cli_report["first_day"]) == ("abs", "2026-02-01")


def test_import_dataset_errors(tmp_path):
    bucket = LocalLandingBucket(tmp_path / "l")
    with pytest.raises(FileNotFoundError, match="has no import.json"):
        importers.import_dataset(tmp_path, bucket)
    cases = [
        ({**DATASET, "interactions": ["data/part-0.parquet", "data/gone.csv"]}, FileNotFoundError,
         r"interactions\[1\] file 'data/gone.csv' not found"),
        ({**DATASET, "items": "nope.parquet"}, FileNotFoundError, "items file 'nope.parquet'"),
        ({**DATASET, "ratings": "r.csv"}, ValueError, r"unknown key\(s\) \['ratings'\]"),
        ({k: v for k, v in DATASET.items() if k != "name"}, ValueError, "'name' must be"),
        ({**DATASET, "interactions": []}, ValueError, "non-empty list"),
        ({**DATASET, "options": {**DATASET["options"], "colour": 1}}, ValueError,
         "unknown import option"),
        ({**DATASET, "name": "tiny feed"}, ValueError, "source must match"),
    ]  # fmt: skip
    for i, (config, error, message) in enumerate(cases):
        folder = _dataset_folder(tmp_path / f"case{i}", config)
        with pytest.raises(error, match=message):
            importers.import_dataset(folder, bucket, now=NOW)


def test_committed_benchmark_dataset_folders_are_valid():
    """benchmarks/datasets/*/import.json: known keys, valid options, relative data paths (the
    data itself is not in the repository, so it is not read here)."""
    root = Path(__file__).resolve().parents[1] / "benchmarks" / "datasets"
    folders = sorted(p.parent for p in root.glob(f"*/{importers.CONFIG_FILE}"))
    assert [f.name for f in folders] == ["kuairand-pure-log-0425-0508", "movielens-latest-small"]
    for folder in folders:
        config = json.loads((folder / importers.CONFIG_FILE).read_text())
        assert set(config) <= {"name", "interactions", "items", "users", "options"}
        assert config["name"] == folder.name and (folder / "README.md").is_file()
        opts = ImportOptions.from_dict({"source": config["name"], **config["options"]})
        assert opts.onboarding_first_n == 0  # no onboarding leakage in a temporal benchmark
        files = config["interactions"] if isinstance(config["interactions"], list) else []
        for path in [*files, config.get("items")]:
            assert path is None or path.startswith("../../../../shared/datasets/")
    kuai = ImportOptions.from_dict(
        json.loads((root / "kuairand-pure-log-0425-0508" / importers.CONFIG_FILE).read_text())[
            "options"
        ]
    )
    # only id, creator, tag and upload date of the item table: never its statistics (leakage)
    item_cols = {kuai.items_item_col, kuai.creator_col, kuai.category_col, kuai.created_col}
    assert item_cols == {"video_id", "author_id", "tag", "upload_dt"} and not kuai.text_cols
    assert "is_follow" not in kuai.event_flags


def test_bench_quality_datasets_by_path_or_name(tmp_path, monkeypatch):
    """SOCIALREC_BENCH_DATASETS takes folder paths or the names of benchmarks/datasets/
    folders; anything else is a clear error naming it, not a traceback."""
    from benchmarks import quality

    name = "kuairand-pure-log-0425-0508"
    own = _dataset_folder(tmp_path / "own", DATASET)
    assert quality.dataset_folders(f"{name}, {own}") == [quality.DATASETS / name, own.resolve()]
    monkeypatch.chdir(tmp_path)  # a relative path is taken from where make runs
    assert quality.dataset_folders("own") == [own.resolve()]
    for spec in ("no-such-dataset", str(tmp_path)):
        with pytest.raises(SystemExit, match="not a dataset folder"):
            quality.dataset_folders(spec)
