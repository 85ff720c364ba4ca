"""Settings: local directories are made for local paths only."""

from __future__ import annotations

from socialrec.settings import Settings


def test_ensure_dirs_makes_no_directory_of_a_bucket_or_a_server_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URI taken for a relative path would land here
    settings = Settings(
        data_dir=tmp_path / "data",
        landing_uri="gs://landing",
        milvus_uri="http://127.0.0.1:19530",
    )
    settings.ensure_dirs()
    assert (tmp_path / "data").is_dir() and settings.features_dir.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]

    local = Settings(data_dir=tmp_path / "data2")
    local.ensure_dirs()
    assert (tmp_path / "data2" / "landing").is_dir()
    assert (tmp_path / "data2").is_dir() and local.models_dir.is_dir()
