"""Deleting posts from the post index and forgetting users in the seen store: the serving-side
halves of a deletion (the durable half is the landing tombstone, ``socialrec.data.deletion``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from socialrec.stores.index import PREFIXES, PostIndex
from socialrec.stores.vector_search import validated_ints


def delete_posts(index: PostIndex, post_ids: Sequence[int]) -> dict[str, int]:
    """Delete posts (by primary key) from EVERY version of both kinds of collection
    (``posts_*`` and ``post_texts_*``: the serving ones and those kept for a rollback), so a
    deleted post leaves retrieval, ``/similar`` and ``/search`` and no rollback brings it back.
    Returns ``{collection: ids asked}``; an id a collection lacks is a no-op."""
    ids = validated_ints(list(post_ids), "post_ids")
    names = [n for prefix in PREFIXES for n in index.list_versions(prefix)] if ids else []
    for name in names:
        index.client.delete(name, ids=ids)
    return {name: len(ids) for name in names}


def forget_users(seen_store, user_ids: Iterable[int]) -> int:
    """``SeenStore.forget_user`` of each user; returns the seen rows deleted (when counted)."""
    return sum(seen_store.forget_user(int(u)) for u in user_ids)
