"""End to end: forget a user and delete a post, then run the real ``deletion_job``.

On a COPY of the session's materialized deployment (``e2e_materialized``: the shared data
directory is never written), with its own local Milvus server (started here, stopped at the
end): the tombstones land through ``socialrec.data.deletion.write_tombstones`` (what
``POST /forget`` and ``POST /posts/delete`` call), the job runs in a child process like
``make materialize`` (``execute_in_process`` against the copy's Dagster instance), and every
place the user and the post lived is checked: the warehouse facts and ML sets, the text
embeddings, the feature tables, the Feast online store, the seen store, both Milvus
collections (every version)."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from socialrec.data.deletion import write_tombstones
from socialrec.data.landing import LocalLandingBucket
from tests.conftest import materialize_assets

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.e2e, pytest.mark.milvus_server, pytest.mark.timeout(1500)]

# the Feast registry of the copy names the ORIGINAL directory's parquet files (absolute paths):
# re-applied first, as the feast_registry asset does, so the copy's online store is built from
# the copy's feature tables
JOB = """
import sys

import dagster as dg

import feature_repo
from orchestration.definitions import defs
from socialrec.features import store
from socialrec.settings import Settings

s = Settings()
store.apply_definitions(store.feature_store(s), feature_repo.all_definitions(s))
with dg.DagsterInstance.get() as instance:
    result = defs.resolve_job_def("deletion_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
for event in result.all_events:
    if event.event_type_value == "STEP_FAILURE":
        print("failed step", event.step_key, event.event_specific_data.error.message)
print("deletion_job:", "success" if result.success else "FAILED")
sys.exit(0 if result.success else 1)
"""


def _ignore(directory: str, names: list[str]) -> set[str]:
    """Not copied: the served bento store (not needed) and the local Milvus server's state: a
    server may be running on the original directory (the session's service), and a copy of a
    live server's files is not a consistent snapshot; the copy's index is built afresh by
    ``post_index`` on the copy's own server."""
    if not (Path(directory) / "warehouse.duckdb").exists():
        return set()
    return {"bentoml", "milvus-server"} & set(names)


def _settings(data_dir: Path):
    from socialrec.settings import Settings

    return Settings(data_dir=data_dir)


def _warehouse_users(path: Path, table: str, user_id: int) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"select count(*) from {table} where user_id = ?", [user_id]).fetchone()[
            0
        ]


def _index_rows(uri: str, post_id: int) -> dict[str, int]:
    """``{collection: rows of post_id}`` over every version of both kinds of collection."""
    from socialrec.stores.index import PREFIXES, PostIndex

    with PostIndex(uri) as index:
        out = {}
        for name in [n for p in PREFIXES for n in index.list_versions(p)]:
            index.client.load_collection(name)
            rows = index.client.query(
                name,
                filter=f"post_id == {post_id}",
                output_fields=["post_id"],
                consistency_level="Strong",
            )
            out[name] = len(rows)
        return out


def _online(settings, entity: str, entity_id: int) -> dict:
    """The online features of one entity (Feast's own read), the join key left out."""
    from socialrec.features import store
    from socialrec.features.tables import ENTITY_IDS, feature_refs

    key = ENTITY_IDS[entity]
    fs = store.feature_store(settings)
    got = fs.get_online_features(feature_refs(entity), [{key: entity_id}]).to_dict()
    return {name: values[0] for name, values in got.items() if name != key}


@pytest.fixture(scope="module")
def deletion_run(e2e_materialized, e2e_warehouse, tmp_path_factory):
    from socialrec.stores.milvus_server import LocalMilvusServer
    from socialrec.stores.seen import open_seen_store

    posts, users = e2e_warehouse
    user_id = int(users["user_id"].iloc[3])  # an active user (not one other tests act as)
    post_id = int(posts.loc[posts["creator_id"] != user_id, "post_id"].iloc[0])
    src = Path(e2e_materialized["SOCIALREC_DATA_DIR"])
    data_dir = tmp_path_factory.mktemp("deletion") / "data"
    t0 = time.time()
    shutil.copytree(src, data_dir, ignore=_ignore)
    print(f"copied the deployment in {time.time() - t0:.0f}s")
    env = {
        **e2e_materialized,
        "SOCIALREC_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster"),
        "BENTOML_HOME": str(data_dir / "bentoml"),
    }
    settings = _settings(data_dir)
    with LocalMilvusServer(data_dir, die_with_parent=True) as server:
        t0 = time.time()
        materialize_assets(env, ["post_index"])
        print(f"indexed the copy in {time.time() - t0:.0f}s")
        before = {
            "events": _warehouse_users(data_dir / "warehouse.duckdb", "fct_interactions", user_id),
            "index": _index_rows(server.uri, post_id),
            "user_online": _online(settings, "user", user_id),
            "post_online": _online(settings, "post", post_id),
        }
        now = dt.datetime.now(dt.UTC)
        with open_seen_store(settings) as seen:
            seen.mark(user_id, [post_id, post_id + 1], "VIEW", ts=now)
            seen.block(user_id, [int(posts["creator_id"].iloc[0])])
            seen.mark(user_id + 1, [post_id], "VIEW", ts=now)  # another user: kept
        bucket = LocalLandingBucket(settings.landing_uri)
        keys = [
            write_tombstones(bucket, "user", [user_id]),
            write_tombstones(bucket, "post", [post_id]),
        ]
        t0 = time.time()
        out = subprocess.run(
            [sys.executable, "-c", JOB],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        seconds = time.time() - t0
        print(f"deletion_job took {seconds:.0f}s")
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]
        yield {
            "user_id": user_id,
            "post_id": post_id,
            "settings": settings,
            "data_dir": data_dir,
            "uri": server.uri,
            "before": before,
            "keys": keys,
        }


def test_the_deletion_is_meaningful_before_the_job(deletion_run):
    before = deletion_run["before"]
    assert before["events"] > 0
    assert before["index"] and all(n == 1 for n in before["index"].values()), before["index"]
    assert any(v is not None for v in before["user_online"].values())
    assert any(v is not None for v in before["post_online"].values())
    assert [k.split("/")[0] for k in deletion_run["keys"]] == ["users", "posts"]


def test_forgotten_user_is_gone_from_warehouse_features_online_and_seen(deletion_run):
    from socialrec.features import text
    from socialrec.features.tables import ENTITY_VIEWS, read_feature_table
    from socialrec.stores.seen import open_seen_store

    user_id, settings = deletion_run["user_id"], deletion_run["settings"]
    path = deletion_run["data_dir"] / "warehouse.duckdb"
    for table in (
        "stg_events",
        "fct_interactions",
        "quarantined_events",
        "ml_ranking_samples",
        "ml_retrieval_positives",
        "user_daily_activity",
    ):
        assert _warehouse_users(path, table, user_id) == 0, table
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(
            "select is_deleted, headline, about, onboarding_categories, n_events "
            "from dim_users where user_id = ?",
            [user_id],
        ).fetchone()
    assert row == (True, "", "", "", 0)  # flagged, nothing personal left
    for view in ENTITY_VIEWS["user"]:
        table = read_feature_table(settings, view)
        assert user_id not in set(table["user_id"]), view
    embedded = text.read_embeddings(settings.features_dir / text.USER_EMBEDDINGS_FILE)
    assert user_id not in set(embedded["user_id"])
    online = _online(settings, "user", user_id)
    assert online and all(v is None for v in online.values()), online
    with open_seen_store(settings) as seen:
        state = seen.state(user_id)
        assert seen.seen(user_id) == set() and seen.blocked_creators(user_id) == set()
        assert not state.negatives and not state.blocked
        assert deletion_run["post_id"] in seen.seen(user_id + 1)  # another user: kept


def test_deleted_post_is_gone_from_every_index_version_features_and_online(deletion_run):
    from socialrec.features import text
    from socialrec.features.tables import ENTITY_VIEWS, read_feature_table

    post_id, settings = deletion_run["post_id"], deletion_run["settings"]
    rows = _index_rows(deletion_run["uri"], post_id)
    assert rows.keys() == deletion_run["before"]["index"].keys()
    assert all(n == 0 for n in rows.values()), rows
    for view in ENTITY_VIEWS["post"]:
        table = read_feature_table(settings, view)
        assert post_id not in set(table["post_id"]), view
    history = read_feature_table(settings, "user_history")
    recent = {int(p) for ids in history["recent_post_ids"] for p in str(ids).split(",") if p}
    assert post_id not in recent
    embedded = text.read_embeddings(settings.features_dir / text.POST_EMBEDDINGS_FILE)
    assert post_id not in set(embedded["post_id"])
    online = _online(settings, "post", post_id)
    assert online and all(v is None for v in online.values()), online
    path = deletion_run["data_dir"] / "warehouse.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(
            "select is_deleted, description from dim_posts where post_id = ?", [post_id]
        ).fetchone()
        assert row == (True, "")  # flagged, its text blanked
        for table in ("ml_ranking_samples", "ml_retrieval_positives"):
            n = con.execute(f"select count(*) from {table} where post_id = ?", [post_id])
            assert n.fetchone()[0] == 0, table
