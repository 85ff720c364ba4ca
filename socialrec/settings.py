"""One settings object for every process (assets, service, tests, benchmarks).

Chosen by ``SOCIALREC_PROFILE``:

* ``local`` (default): every piece of state lives under one git-ignored data directory,
  ``SOCIALREC_DATA_DIR`` (default ``.socialrec`` under the current working directory).
* ``gcp``: GCS landing bucket, BigQuery warehouse, ScyllaDB seen store, a Milvus server and an
  MLflow tracking server. Their addresses come from environment variables; nothing is
  hard-coded.

Every field can be overridden with ``SOCIALREC_<FIELD>`` (e.g. ``SOCIALREC_MILVUS_URI``).
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

POSITIVE_EVENTS = ("LIKE", "COMMENT", "SHARE", "BOOKMARK", "VIEW_FULL")
NEGATIVE_EVENTS = ("DISLIKE", "REPORT")
# the candidate sources the retrieval stage can merge (socialrec.recommender.sources)
CANDIDATE_SOURCES = ("two_tower", "neighbours", "trending", "popular", "fresh")
EVENT_TYPES = (
    "IMPRESSION",
    "VIEW",
    "VIEW_FULL",
    "LIKE",
    "COMMENT",
    "SHARE",
    "BOOKMARK",
) + NEGATIVE_EVENTS
MEDIA_TYPES = ("text", "image", "video", "link")
TEXT_EMBEDDING_DIM = 384
# the creator_id of a post whose creator is unknown (landing and warehouse: creator_id null)
# in the int64 layers: feature tables, catalog, index, API answers. Never a user_id; such posts
# have no creator features and are never capped together as one creator
UNKNOWN_CREATOR_ID = -1
LOCAL_API_TOKEN = "socialrec-local-dev-token"  # the local profile's bearer token (README)
LOCAL_READ_TOKEN = "socialrec-local-read-token"  # its read-only token (debug answers)
DEMO_RECORD, GCP_FIRST_DAY = "demo.json", "2026-01-01"  # the demo's days: Settings.demo_start


# experiments (socialrec.recommender.experiments): the names /recommend answers besides the
# configured variants: "control" (the settings as they are) and "holdout" (the plain baseline)
CONTROL, HOLDOUT = "control", "holdout"
VARIANT_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"


class Variant(BaseModel):
    """One experiment arm: a share of the users and what it changes. Every override left None
    keeps the control's value; an unknown key is an error when the settings load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=VARIANT_NAME_PATTERN)
    share: float = Field(gt=0.0, le=1.0)
    # the ranker's outcome weights at serving (socialrec.models.ranker.OUTCOMES)
    outcome_weights: dict[str, float] | None = None
    # the candidate sources and their fusion
    candidate_sources: list[str] | None = Field(default=None, min_length=1)
    source_weights: dict[str, float] | None = None
    source_top_n: int | None = Field(default=None, ge=1, le=5000)
    exploration_share: float | None = Field(default=None, ge=0.0, le=1.0)
    # the re-ranking policy
    max_per_category: int | None = Field(default=None, ge=1)
    max_per_creator: int | None = Field(default=None, ge=1)
    diversity_decay: float | None = Field(default=None, gt=0.0, le=1.0)
    new_post_boost_hours: float | None = Field(default=None, ge=0)
    new_post_boost: float | None = Field(default=None, ge=1.0)
    softmax_temperature: float | None = Field(default=None, ge=0)
    # the Milvus alias of the post-tower vectors the two_tower source searches
    collection_alias: str | None = Field(default=None, min_length=1, max_length=255)

    def overrides(self) -> dict:
        """The settings this variant changes (field -> value)."""
        out = self.model_dump(exclude={"name", "share", "outcome_weights"}, exclude_none=True)
        if self.outcome_weights is not None:
            out["ranker_outcome_weights"] = dict(self.outcome_weights)
        return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOCIALREC_", extra="ignore")

    profile: Literal["local", "gcp"] = "local"
    data_dir: Path = Field(default=Path(".socialrec"))

    # --- addresses; None means "the local default under data_dir" ---------------------------
    landing_uri: str | None = None  # a directory (local) or gs://bucket (gcp)
    warehouse_path: Path | None = None  # DuckDB file (local)
    dbt_target: str | None = None  # dbt profile target: duckdb | bigquery
    bigquery_project: str | None = None
    bigquery_dataset: str = "socialrec"
    bigquery_location: str = "US"
    # host:port of a BigQuery Storage Read API that is not Google's (the emulator of the tests,
    # reached without TLS); None: Google's. The REST API's address is the Google client's own
    # BIGQUERY_EMULATOR_HOST, so that every client (dbt, Feast, dagster-gcp) follows it.
    bigquery_storage_endpoint: str | None = None
    # Feast in the gcp profile: the Redis online store (Feast's connection string,
    # "host:port[,password=...][,ssl=true]"; Memorystore on GCP) and the registry every pod
    # reads (default gs://<gcs_bucket>/feast/registry.pb)
    redis_connection_string: str | None = None
    feast_registry: str | None = None
    gcs_bucket: str | None = None
    scylla_hosts: str | None = None  # comma separated
    scylla_keyspace: str = "socialrec"
    # http(s)://host:19530 (a Milvus server or cluster) or a Milvus Lite file path; None (local
    # profile): the local Milvus server of data_dir (socialrec.stores.milvus_server)
    milvus_uri: str | None = None
    milvus_token: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "socialrec"

    # --- demo data ---------------------------------------------------------------------------
    seed: int = 42
    demo_users: int = 2000
    demo_posts: int = 5000
    demo_events: int = 200_000
    demo_days: int = Field(default=14, ge=1)
    # the demo's first day (YYYY-MM-DD); None: its demo_days end now (demo_start())
    demo_start_date: str | None = None

    # --- data quality ------------------------------------------------------------------------
    quarantine_warn_rate: float = 0.05  # share of quarantined event lines that warns
    # the first day of the raw_events partitions (None: the demo data's, demo_start()); an
    # event stamped later than its load + event_max_future_hours, or older than its load -
    # event_retention_days (0: no bound; an imported log may be years old), is quarantined
    event_start_date: str | None = None
    event_max_future_hours: float = Field(default=1.0, ge=0)
    event_retention_days: int = Field(default=0, ge=0)

    # --- models ------------------------------------------------------------------------------
    two_tower_embedding_dim: int = 32
    # tower sizes: id embeddings, the text projection and the hidden layer of each tower
    two_tower_id_dim: int = Field(default=32, ge=1)
    two_tower_text_dim: int = Field(default=64, ge=1)
    two_tower_hidden_dim: int = Field(default=128, ge=1)
    two_tower_temperature: float = Field(default=0.1, gt=0)  # softmax temperature of the loss
    two_tower_epochs: int = 5
    two_tower_batch_size: int = 512
    # uniformly sampled extra negatives per batch (mixed negative sampling); 0: in-batch only
    two_tower_random_negatives: int = Field(default=0, ge=0)
    ranker_iterations: int = Field(default=600, ge=1)  # at most (early stopping)
    # categorical features of at most this many values one-hot encoded, others CatBoost's CTRs
    ranker_one_hot_max_size: int = Field(default=64, ge=1)
    # the ranker's outcome weights in its score (negatives subtract); None: chosen on validation
    ranker_outcome_weights: dict[str, float] | None = None
    # the ranker's training set: replayed requests of the validation split (at most this many,
    # users sampled), every positive candidate kept and this share of the other candidates
    ranker_max_requests: int = Field(default=20_000, ge=1)
    ranker_negative_share: float = Field(default=0.05, gt=0.0, le=1.0)
    # replayed from a snapshot per day (per window beyond this many days), by this many
    # processes side by side (1: in the training's process alone)
    ranker_max_snapshots: int = Field(default=8, ge=1)
    ranker_replay_processes: int = Field(default=2, ge=1)
    # co-engagement neighbours (socialrec.models.neighbours): each post's k best by asymmetric
    # cosine (alpha, shrink) or EASE (l2); method, signal (positive, exposure) "auto": validated
    neighbours_k: int = Field(default=100, ge=1)
    neighbours_method: Literal["cosine", "ease", "auto"] = "auto"
    neighbours_alpha: float = Field(default=0.8, ge=0.0, le=1.0)
    neighbours_shrink: float = Field(default=10.0, ge=0.0)
    neighbours_l2: float = Field(default=500.0, gt=0.0)
    neighbours_signal: Literal["positive", "exposure", "auto"] = "auto"
    # user_history.recent_post_ids: the user's latest posts the neighbours source starts from
    history_recent_posts: int = Field(default=50, ge=1, le=500)
    # the challenger becomes champion unless its validation metric is this much (relative) worse
    quality_gate_tolerance: float = 0.02
    evaluation_max_users: int = 400  # held-out users sampled by the evaluations (demo size)
    evaluation_name: str = "warehouse"  # the dataset name in the evaluation's report

    # --- serving -----------------------------------------------------------------------------
    retrieval_top_n: int = Field(default=500, ge=1, le=5000)  # ANN candidates per request
    # the candidate sources merged by the retrieval stage (CANDIDATE_SOURCES), and how
    # many candidates each source other than the ANN gives
    candidate_sources: list[str] = Field(
        default_factory=lambda: ["two_tower", "neighbours", "trending", "popular", "fresh"]
    )
    source_top_n: int = Field(default=100, ge=1, le=5000)
    # the sources' weights in the merged candidate order (weighted reciprocal rank fusion);
    # None: the weights learned with the ranker on held-out replayed requests
    source_weights: dict[str, float] | None = None
    trending_days: float = Field(default=2.0, gt=0)  # the catalog's trending window
    exploration_share: float = 0.2
    # re-ranking: the top k holds at most this many posts of one category / one creator (when
    # enough other posts exist); diversity_decay < 1 also decays repeated categories' scores
    max_per_category: int | None = 4
    max_per_creator: int | None = 2
    diversity_decay: float = 1.0
    # posts younger than new_post_boost_hours get their score multiplied by new_post_boost
    new_post_boost_hours: float = Field(default=24.0, ge=0)  # 0: no boost
    new_post_boost: float = Field(default=1.15, ge=1.0)
    # > 0: the top k is sampled without replacement from softmax(score / temperature), seeded
    # per request; 0: deterministic order
    softmax_temperature: float = Field(default=0.0, ge=0)
    # promoted posts (e.g. SOCIALREC_PROMOTED_POST_IDS='[12, 40]') go to the top when their
    # ranker score is at least promoted_min_score
    promoted_post_ids: list[int] = Field(default_factory=list)
    promoted_min_score: float = Field(default=0.5, ge=0.0)
    # cold start (nothing known about the user): this share of the slots goes to the freshest
    # posts, the rest to the most popular
    cold_start_fresh_share: float = Field(default=0.3, ge=0.0, le=1.0)
    # the service's cache of online post features (rows change at materialization or /posts)
    # BentoML worker processes of the service (read when bentos/service.py is imported)
    service_workers: int = Field(default=2, ge=1, le=64)
    # threads each worker's numeric libraries (TensorFlow, BLAS/OpenMP, CatBoost) use per call:
    # a request's models are small, parallelism comes from workers and concurrent requests
    service_threads: int = Field(default=1, ge=1, le=64)
    post_feature_cache_seconds: float = Field(default=60.0, ge=0)  # 0: no cache
    post_feature_cache_size: int = Field(default=50_000, ge=0)  # posts kept (LRU)
    collection_alias: str = "posts"
    text_collection_alias: str = "post_texts"  # MiniLM description embeddings (/search)
    # bearer token of the write endpoints (/events, /posts); the read endpoints too when
    # auth_read_endpoints. The local profile has a fixed development token; gcp needs one.
    api_token: SecretStr | None = None
    auth_read_endpoints: bool = False
    # the read-only scope: /recommend's debug answer (a user's preferred categories, seen count,
    # model runs) and the read endpoints when auth_read_endpoints; the write token has it too.
    # Rotation: the new token in api_token / read_token, the old one in *_previous until every
    # client has moved (both are valid meanwhile)
    read_token: SecretStr | None = None
    api_token_previous: SecretStr | None = None
    read_token_previous: SecretStr | None = None
    # where TLS is terminated in front of the service (it speaks plain HTTP): required by the
    # gcp profile, whose tokens must never cross a network in clear (docs/deployment.md)
    tls_termination: Literal["ingress", "load_balancer", "service_mesh"] | None = None
    # the /events write path: a durable local spool appended to the landing bucket
    spool_flush_events: int = Field(default=500, ge=1)  # flush when this many are pending
    spool_flush_seconds: float = Field(default=5.0, gt=0)  # ... or when the oldest is this old
    spool_retry_seconds: float = Field(default=2.0, gt=0)  # wait after a failed flush

    # --- experiments (docs/experiments.md) ------------------------------------------------
    # a user's arm: sha256(salt:user_id) in [0, 1); the first holdout_share is the holdout (a
    # plain popular + fresh baseline), then each variant by its share, the rest is control.
    # SOCIALREC_VARIANTS='[{"name": "no_caps", "share": 0.1, "max_per_creator": 10}]'
    experiment_salt: str = Field(default="socialrec-experiments", min_length=1)
    holdout_share: float = Field(default=0.0, ge=0.0, lt=1.0)
    variants: list[Variant] = Field(default_factory=list)
    # the asset check on experiment_daily_outcomes: a variant whose negative rate is higher
    # than control's (one-sided two-proportion z-test at this alpha; both arms with at least
    # experiment_min_impressions impressions) warns
    experiment_alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    experiment_min_impressions: int = Field(default=1000, ge=1)

    # --- seen store (SQLite, in-memory) ---------------------------------------------------
    # a Bloom filter per user, kept with the seen rows by every writer: a request reads it
    # instead of every seen row. About this share of the posts the user has NOT seen is taken
    # for seen and filtered out (never a seen post shown); 0: no filter, the exact seen set.
    seen_bloom_fp_rate: float = Field(default=0.01, ge=0.0, lt=0.5)
    seen_bloom_capacity: int = Field(default=1024, ge=16)  # a user's first filter; then doubles

    # --- landing sensor ----------------------------------------------------------------------
    landing_sensor_lag_seconds: int = 600  # how late a landing file may become visible

    # --- ScyllaDB seen store -----------------------------------------------------------------
    scylla_port: int = 9042
    scylla_local_dc: str | None = None  # None: the driver takes the first contact point's DC
    scylla_replication_factor: int = Field(default=1, ge=1)  # keyspace RF, at `migrate` only
    scylla_seen_ttl_days: int = Field(default=90, ge=0, le=7300)  # 0: seen rows never expire
    scylla_read_consistency: str = "LOCAL_ONE"  # a cassandra.ConsistencyLevel name
    scylla_write_consistency: str = "LOCAL_QUORUM"
    scylla_username: str | None = None
    scylla_password: SecretStr | None = None

    @model_validator(mode="after")
    def _known_names(self) -> Settings:
        lists = [("candidate_sources", self.candidate_sources)]
        lists += [
            (f"variants[{v.name}].candidate_sources", v.candidate_sources or [])
            for v in self.variants
        ]
        for where, names in lists:
            unknown = sorted(set(names) - set(CANDIDATE_SOURCES))
            if unknown:
                raise ValueError(f"{where}: unknown {unknown} (known: {list(CANDIDATE_SOURCES)})")
        return self

    @model_validator(mode="after")
    def _experiments(self) -> Settings:
        names = [v.name for v in self.variants]
        taken = sorted({n for n in names if names.count(n) > 1} | ({CONTROL, HOLDOUT} & set(names)))
        if taken:
            raise ValueError(f"variants: repeated or reserved names {taken}")
        total = self.holdout_share + sum(v.share for v in self.variants)
        if total > 1.0 + 1e-9:
            raise ValueError(f"holdout_share + the variants' shares is {total:g} (at most 1)")
        return self

    @model_validator(mode="after")
    def _profile_defaults(self) -> Settings:
        if self.profile == "gcp":
            needed = "gcs_bucket bigquery_project milvus_uri mlflow_tracking_uri api_token"
            needed += " redis_connection_string read_token tls_termination"
            missing = [f"SOCIALREC_{f.upper()}" for f in needed.split() if not getattr(self, f)]
            if missing:
                raise ValueError(f"profile 'gcp' needs {', '.join(missing)}")
            if self.read_token.get_secret_value() == self.api_token.get_secret_value():
                raise ValueError("SOCIALREC_READ_TOKEN must differ from SOCIALREC_API_TOKEN")
            self.landing_uri = self.landing_uri or f"gs://{self.gcs_bucket}"
            self.dbt_target = self.dbt_target or "bigquery"
            self.feast_registry = self.feast_registry or f"gs://{self.gcs_bucket}/feast/registry.pb"
        # the process's own state (spool, exported models, BentoML and Dagster homes) is local
        # in every profile
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.profile != "gcp":
            self.landing_uri = self.landing_uri or str(self.data_dir / "landing")
            self.warehouse_path = self.warehouse_path or self.data_dir / "warehouse.duckdb"
            self.dbt_target = self.dbt_target or "duckdb"
            self.api_token = self.api_token or SecretStr(LOCAL_API_TOKEN)
            self.read_token = self.read_token or SecretStr(LOCAL_READ_TOKEN)
            self.mlflow_tracking_uri = (
                self.mlflow_tracking_uri or f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"
            )
        return self

    # --- derived local paths (state that is always local: caches, spools, model stores) -----
    @property
    def first_event_day(self) -> str:
        """The first day of the raw_events partitions (and of make materialize's range)."""
        day = self.event_start_date or self.demo_start_date or self.demo_start().date().isoformat()
        if dt.date.fromisoformat(day).isoformat() != day:
            raise ValueError(f"not a YYYY-MM-DD day: {day!r}")
        return day

    def demo_start(self, recorded: bool = True) -> dt.datetime:
        """The demo data's first instant (UTC): demo_start_date (gcp: else GCP_FIRST_DAY, a
        deployment's partitions never move); else the one the generator recorded in data_dir
        (a re-run on a later day keeps them); else demo_days before now (it ends today)."""
        if self.demo_start_date or self.profile == "gcp":
            day = self.demo_start_date or GCP_FIRST_DAY
            return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
        record = self.data_dir / DEMO_RECORD
        if recorded and record.is_file():
            return dt.datetime.fromisoformat(json.loads(record.read_text())["start"])
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        return now - dt.timedelta(days=self.demo_days)

    @cached_property
    def features_dir(self) -> Path:
        """Parquet feature tables (Feast offline source in the local profile)."""
        return self.data_dir / "features"

    @cached_property
    def feast_dir(self) -> Path:
        """Feast registry + SQLite online store (local profile)."""
        return self.data_dir / "feast"

    @cached_property
    def mlflow_artifacts_dir(self) -> Path:
        return self.data_dir / "mlflow" / "artifacts"

    @cached_property
    def models_dir(self) -> Path:
        """Exported model files (SavedModels, CatBoost) before they reach the model stores."""
        return self.data_dir / "models"

    @cached_property
    def bentoml_home(self) -> Path:
        return self.data_dir / "bentoml"

    @cached_property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    @cached_property
    def spool_dir(self) -> Path:
        """The /events durable spool (always local: it is what survives a bucket outage)."""
        return self.data_dir / "spool"

    @cached_property
    def seen_store_path(self) -> Path:
        """SQLite seen store (embedded default of the ScyllaDB seen store)."""
        return self.data_dir / "seen.sqlite"

    def ensure_dirs(self) -> None:
        """Make the local directories of this profile (a bucket or a server is not one)."""
        remote = ("gs://", "http://", "https://", "tcp://")
        local_state = [self.data_dir, self.features_dir, self.models_dir]
        local_state += [self.bentoml_home, self.dagster_home]
        if self.profile == "local":
            milvus = self.milvus_uri and not str(self.milvus_uri).startswith(remote)
            local_state += [
                None if str(self.landing_uri).startswith(remote) else Path(str(self.landing_uri)),
                self.feast_dir,
                self.mlflow_artifacts_dir,
                Path(str(self.milvus_uri)).parent if milvus else None,
            ]
        for d in local_state:
            if d is not None:
                d.mkdir(parents=True, exist_ok=True)


def get_settings(**overrides) -> Settings:
    """A fresh Settings from the environment (plus explicit overrides, used by tests)."""
    return Settings(**overrides)
