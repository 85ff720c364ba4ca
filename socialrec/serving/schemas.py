"""The service's HTTP surface as data: the routes, the request limits and the typed request and
response models (pydantic: the OpenAPI schema at ``/docs``). What each endpoint does is in
``socialrec.serving.endpoints``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from socialrec.settings import CONTROL, EVENT_TYPES, MEDIA_TYPES, VARIANT_NAME_PATTERN

# every bound is what the storage behind the field holds (docs/endpoints.md, "Limits")
MAX_ID = 2**63 - 1  # user, post and creator ids: int64 in the warehouse, Milvus and Feast
MAX_CATEGORY_ID = 2**31 - 1  # category ids: small ints (int32 range, well inside INT64)
MAX_DWELL_MS = 86_400_000  # a day: longer dwell times are clock bugs, not reading
MIN_YEAR, MAX_YEAR = 1678, 2261  # timestamps: inside pandas' datetime64[ns] range
MAX_EVENT_ID_CHARS = 128
MAX_VARIANT_CHARS = 32  # an experiment arm's name (VARIANT_NAME_PATTERN)
MAX_BODY_BYTES = 1_048_576  # a request body (1000 events fit in ~0.2 MB)
NULLABLE = {"nullable": True}  # OpenAPI 3.0: BentoML drops the null of ``X | None``
MAX_K = 200
MAX_EVENTS = 1000
MAX_CATEGORIES = 20
MAX_QUERY_CHARS = 512
MAX_DESCRIPTION_CHARS = 5000
MAX_BLOCKS = 100  # creators per /blocks request
WRITE_ROUTES = ("/events", "/posts", "/blocks", "/forget", "/posts/delete")
READ_ROUTES = ("/recommend", "/similar", "/search")
API_ROUTES = READ_ROUTES + WRITE_ROUTES
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
MediaType = Literal[MEDIA_TYPES]  # type: ignore[valid-type]
Id = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
CategoryId = Annotated[int, Field(strict=True, ge=0, le=MAX_CATEGORY_ID)]
CreatorId = Id
K = Annotated[int, Field(strict=True, ge=1, le=MAX_K)]


def _storable(value: dt.datetime) -> dt.datetime:
    """A timestamp the warehouse can hold (datetime64[ns]): ValueError (a 422) outside
    MIN_YEAR..MAX_YEAR. The year is checked before any conversion, which could overflow."""
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"the year must be within {MIN_YEAR}..{MAX_YEAR}")
    return value


# the years MIN_YEAR..MAX_YEAR as the document's pattern of a date-time (the validator decides;
# tests/service/test_door.py checks the two agree on every four-digit year)
YEAR_PATTERN = r"^(16(7[89]|[89][0-9])|1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9]|226[01])-"


def _a_time(value: object) -> object:
    """A timestamp is an ISO-8601 string (or a datetime): never a number, which pydantic
    would otherwise read as seconds since 1970 (the document says a date-time string)."""
    if isinstance(value, int | float):
        raise ValueError("a date-time string (ISO 8601) is expected, not a number")
    return value


Timestamp = Annotated[
    dt.datetime,
    BeforeValidator(_a_time),
    AfterValidator(_storable),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": YEAR_PATTERN}),
]


# --- bodies ---------------------------------------------------------------------------------
class EventIn(BaseModel):
    """One interaction event, as the app emits it (docs/endpoints.md, POST /events)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "event_id": "e-1",
                "user_id": 17,
                "post_id": 42,
                "event_type": "LIKE",
                "ts": "2026-01-06T12:00:00Z",
                "dwell_ms": 5300,
                "variant": "control",
            }
        }
    )

    event_id: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_EVENT_ID_CHARS),
    ]
    user_id: Id
    post_id: Id
    event_type: EventType
    ts: Timestamp
    dwell_ms: Annotated[
        int | None, Field(strict=True, ge=0, le=MAX_DWELL_MS, json_schema_extra=NULLABLE)
    ] = None
    variant: (
        Annotated[
            str,
            StringConstraints(max_length=MAX_VARIANT_CHARS, pattern=VARIANT_NAME_PATTERN),
        ]
        | None
    ) = Field(
        default=None,
        description="the experiment arm of the /recommend answer that showed the post "
        "(its `variant`, sent back as is)",
        json_schema_extra=NULLABLE,
    )


class Reason(BaseModel):
    """One reason an item is in the feed (``socialrec.recommender.reasons``), short enough for
    a card: ``source`` (a candidate source that found it), ``similarity`` (the two-tower
    retrieval similarity), ``ranker`` (the ranker's blended score), ``outcome`` (a predicted
    outcome the ranker weighs), ``rule`` (a re-ranking rule applied, a cold start or a
    fallback)."""

    model_config = ConfigDict(
        json_schema_extra={
            "required": ["code", "text", "value"],
            "example": {"code": "outcome", "text": "p(like) 0.12", "value": 0.12},
        }
    )

    code: Literal["source", "similarity", "ranker", "outcome", "rule"]
    text: str = Field(description="what it means, in plain English")
    value: float | None = Field(
        default=None,
        description="the number behind it (a score, a probability, a factor), if any",
        json_schema_extra=NULLABLE,
    )


class Item(BaseModel):
    post_id: int
    score: float
    ranker_score: float | None = Field(json_schema_extra=NULLABLE)
    category_id: int
    creator_id: int
    boosted: bool = Field(
        default=False, description="the new-post boost applied (a post younger than the window)"
    )
    promoted: bool = Field(
        default=False, description="a promoted post moved to the front (SOCIALREC_PROMOTED_*)"
    )
    reasons: list[Reason] = Field(
        default_factory=list,
        description="why it is here, in order: sources, similarity, ranker, outcomes, rules "
        "(at most 8)",
    )


class RecommendResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "user_id": 17,
                "source": "personalized",
                "reason": None,
                "items": [
                    {
                        "post_id": 42,
                        "score": 0.91,
                        "ranker_score": 0.91,
                        "category_id": 3,
                        "creator_id": 8,
                        "boosted": False,
                        "promoted": False,
                        "reasons": [
                            {
                                "code": "source",
                                "text": "found by two_tower retrieval (#3)",
                                "value": 0.64,
                            },
                            {
                                "code": "similarity",
                                "text": "retrieval similarity 0.64",
                                "value": 0.64,
                            },
                            {"code": "ranker", "text": "ranker score 0.91", "value": 0.91},
                            {"code": "outcome", "text": "p(positive) 0.91", "value": 0.91},
                        ],
                    }
                ],
                "debug": None,
                "variant": "control",
            }
        }
    )

    user_id: int
    source: Literal["personalized", "cold_start", "fallback"]
    items: list[Item]
    reason: str | None = Field(
        default=None,
        description="why the fallback answered (source 'fallback' only)",
        json_schema_extra=NULLABLE,
    )
    debug: dict | None = Field(default=None, json_schema_extra=NULLABLE)
    variant: str = Field(
        default=CONTROL,
        description="the user's experiment arm (control, holdout or a configured variant): "
        "send it back with the events of these items",
    )


class EventsResponse(BaseModel):
    accepted: int = Field(description="events marked in the seen store (read-your-writes)")
    spooled: int = Field(
        default=0, description="events durably spooled for the landing bucket (the warehouse)"
    )


class BlocksResponse(BaseModel):
    user_id: int
    blocked_creators: list[int] = Field(
        description="every creator the user blocks now (their posts are filtered out)"
    )


class Neighbor(BaseModel):
    post_id: int
    score: float = Field(description="cosine of the two posts' post-tower vectors")
    category_id: int
    creator_id: int


class SimilarResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "post_id": 42,
                "items": [{"post_id": 77, "score": 0.83, "category_id": 3, "creator_id": 5}],
            }
        }
    )

    post_id: int
    items: list[Neighbor]


class SearchHit(BaseModel):
    post_id: int
    score: float = Field(description="the ranking score: text_score, or the personalized blend")
    text_score: float = Field(description="cosine of the query and the description (MiniLM)")
    user_score: float | None = Field(
        default=None,
        description="user-tower . post-tower (personalized searches only)",
        json_schema_extra=NULLABLE,
    )
    category_id: int
    creator_id: int


class SearchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "query": "street food in lisbon",
                "user_id": 17,
                "personalized": True,
                "reason": None,
                "items": [
                    {
                        "post_id": 42,
                        "score": 0.61,
                        "text_score": 0.66,
                        "user_score": 0.49,
                        "category_id": 3,
                        "creator_id": 8,
                    }
                ],
            }
        }
    )

    query: str
    user_id: int | None = Field(json_schema_extra=NULLABLE)
    personalized: bool
    reason: str | None = Field(
        default=None, description="why a search was not personalized", json_schema_extra=NULLABLE
    )
    items: list[SearchHit]


class PostResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "post_id": 900001,
                "collections": {"posts": "posts_v3_20260106120000"},
                "landing_key": "posts/dt=2026-01-06/api-20260106T120000000000-900001.jsonl.gz",
                "online_features": True,
            }
        }
    )

    post_id: int
    collections: dict[str, str] = Field(description="alias -> the collection the post went into")
    landing_key: str = Field(description="the posts upsert file in the landing bucket")
    online_features: bool = Field(
        default=False,
        description="its online features were written (the ranking stage of /recommend knows it)",
    )


class DeletionResponse(BaseModel):
    """The answer of ``POST /forget`` and ``POST /posts/delete``: the tombstone landed (the
    ``deletion_job`` applies it to the warehouse, features and ML sets) and what the service
    removed at once."""

    kind: Literal["user", "post"]
    id: int
    landing_key: str = Field(description="the tombstone file in the landing bucket")
    seen_rows_deleted: int = Field(0, description="/forget: the user's seen rows deleted")
    collections: list[str] = Field(
        default_factory=list, description="/posts/delete: the Milvus collections it left"
    )
