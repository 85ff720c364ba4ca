"""What a person reads on a post's card (the feed page, ``socialrec.serving.page``): its
description (cut to ``MAX_DESCRIPTION_CHARS``), media type and category name, the names of
every category, and a few known users to pick from.

Built from ``dim_posts`` (description, media_type, category_name) and ``dim_users`` when the
recommender bento is built (``assets/serving.py``), saved next to the catalog in its model
directory (``details.parquet`` + ``page.json``): the service never reads the warehouse. A post
published later through ``POST /posts`` has no row here (the page says so on its card).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

MAX_DESCRIPTION_CHARS = 280  # a card's text; the whole description stays in the warehouse
KNOWN_USERS = 24  # the most active users, offered on the page
DETAILS_FILE, PAGE_FILE = "details.parquet", "page.json"


@dataclass
class PostDetails:
    posts: pd.DataFrame  # post_id (index), description, media_type, category_name
    categories: dict[int, str] = field(default_factory=dict)
    users: list[int] = field(default_factory=list)

    @classmethod
    def from_warehouse(
        cls, dim_posts: pd.DataFrame, dim_users: pd.DataFrame | None = None
    ) -> PostDetails:
        """The details of every post of ``dim_posts`` (the latest row per post) and the
        ``KNOWN_USERS`` users with most events of ``dim_users`` (user_id, n_events)."""
        p = dim_posts.drop_duplicates("post_id", keep="last")
        names = p.get("category_name", pd.Series(None, index=p.index, dtype=object))
        frame = pd.DataFrame(
            {
                "description": p["description"]
                .fillna("")
                .astype(str)
                .str.slice(0, MAX_DESCRIPTION_CHARS),
                "media_type": p.get("media_type", pd.Series("", index=p.index))
                .fillna("")
                .astype(str)
                .to_numpy(),
                "category_name": names.fillna("").astype(str).to_numpy(),
            }
        )
        frame.index = pd.Index(p["post_id"].astype("int64").to_numpy(), name="post_id")
        cats = (
            pd.DataFrame({"id": p["category_id"].astype("int64").to_numpy(), "name": names.array})
            .dropna()
            .drop_duplicates("id")
            .sort_values("id")
        )
        users: list[int] = []
        if dim_users is not None and len(dim_users):
            top = dim_users.sort_values(["n_events", "user_id"], ascending=[False, True])
            users = [int(u) for u in top["user_id"].head(KNOWN_USERS)]
        return cls(frame, dict(zip(cats["id"].tolist(), cats["name"].tolist(), strict=True)), users)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.posts.reset_index().to_parquet(d / DETAILS_FILE, index=False)
        page = {"categories": {str(k): v for k, v in self.categories.items()}, "users": self.users}
        (d / PAGE_FILE).write_text(json.dumps(page))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> PostDetails:
        """The details saved in ``directory``; empty when there are none (a catalog built
        before they were kept): the page then shows post ids."""
        d = Path(directory)
        if not (d / DETAILS_FILE).exists():
            empty = pd.DataFrame(columns=["description", "media_type", "category_name"])
            return cls(empty.set_index(pd.Index([], dtype="int64", name="post_id")))
        frame = pd.read_parquet(d / DETAILS_FILE).set_index("post_id")
        page = json.loads((d / PAGE_FILE).read_text())
        cats = {int(k): str(v) for k, v in page.get("categories", {}).items()}
        return cls(frame, cats, [int(u) for u in page.get("users", [])])

    def of(self, post_id: int) -> dict | None:
        """{description, media_type, category_name} of a post, None when it has no row."""
        try:
            row = self.posts.loc[int(post_id)]
        except KeyError:
            return None
        return {k: str(row[k]) for k in ("description", "media_type", "category_name")}
