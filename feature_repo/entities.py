"""Feast entities: the join keys every feature view hangs off."""

from feast import Entity, ValueType

from socialrec.features.tables import ENTITY_IDS

user = Entity(
    name="user",
    join_keys=[ENTITY_IDS["user"]],
    value_type=ValueType.INT64,
    description="An app user (also a creator when they post).",
)

post = Entity(
    name="post",
    join_keys=[ENTITY_IDS["post"]],
    value_type=ValueType.INT64,
    description="A post in the feed.",
)

ENTITIES = {"user": user, "post": post}
