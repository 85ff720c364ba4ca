"""Feast entities: the join keys every feature view hangs off."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="An app user (also a creator when they post).",
)

post = Entity(
    name="post",
    join_keys=["post_id"],
    value_type=ValueType.INT64,
    description="A post in the feed.",
)
