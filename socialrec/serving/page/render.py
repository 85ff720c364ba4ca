"""The feed page as HTML strings (no web framework): a user's feed as cards — description,
category, creator, media type, age, score and the reasons of each item —, a new user from
categories, similar posts and text search. Every list comes from the service's own endpoints
(``Endpoints.recommend``, ``similar``, ``search``, called in-process through ``respond``, so a
failure is an answer with a reason on the page, never a 5xx); what a card reads comes from the
catalog (creator, category, created_at) and ``PostDetails`` (description, media type, category
name), both in the catalog's model directory.

The actions on a card (like, dislike, see fewer like this, mark seen) are the page's script
(``static/feed.js``) calling ``POST /events`` (and ``/blocks``) with the bearer token, then
fetching the next page of cards (``/feed/cards``). The page holds the token only in the local
profile, whose token is public (``LOCAL_API_TOKEN``); in any other profile the page is
read-only: no token is ever put in a page there (docs/feed-page.md).
"""

from __future__ import annotations

import html
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from socialrec.serving.errors import ErrorAnswer, respond
from socialrec.serving.schemas import MAX_CATEGORIES, MAX_ID, MAX_QUERY_CHARS
from socialrec.stores.post_details import PostDetails
from socialrec.timeutil import utc_now

STATIC_DIR = Path(__file__).resolve().parent / "static"
TEMPLATE = string.Template((Path(__file__).resolve().parent / "feed.html").read_text())
PAGE_K, MAX_PAGE_K = 10, 50
NEW_USER_IDS = (10**12, 2 * 10**12)  # a new user's id: far above the demo's users
ACTIONS = (  # (action, label, title); the events each sends are in static/feed.js
    ("like", "Like", "a LIKE event"),
    ("dislike", "Dislike", "a DISLIKE event"),
    ("fewer", "See fewer like this", "a DISLIKE event and the creator blocked"),
    ("seen", "Mark seen", "an IMPRESSION event"),
)
esc = html.escape


def _int(value: str | None, low: int = 0, high: int = MAX_ID) -> int | None:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if low <= n <= high else None


@dataclass(frozen=True)
class PageQuery:
    """The page's state, all in its URL: whose feed, the new user's categories, how many
    cards, a search and the post whose similar posts are shown. Values out of range are
    dropped (and said so in ``problems``), never an error."""

    user_id: int | None = None
    categories: tuple[int, ...] = ()
    k: int = PAGE_K
    q: str = ""
    similar: int | None = None
    problems: tuple[str, ...] = ()

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> PageQuery:
        problems = []
        user_id = _int(params.get("user_id")) if params.get("user_id") else None
        if params.get("user_id") and user_id is None:
            problems.append(f"user id {params['user_id'][:40]!r} is not an id (0..{MAX_ID})")
        cats = [_int(c) for c in str(params.get("categories") or "").split(",") if c.strip()]
        k = _int(params.get("k"), 1, MAX_PAGE_K) or PAGE_K
        similar = _int(params.get("similar")) if params.get("similar") else None
        q = " ".join(str(params.get("q") or "").split())[:MAX_QUERY_CHARS]
        return cls(
            user_id=user_id,
            categories=tuple(sorted({c for c in cats if c is not None}))[:MAX_CATEGORIES],
            k=k,
            q=q,
            similar=similar,
            problems=tuple(problems),
        )

    def url(self, path: str = "", **change) -> str:
        """This state's URL below ``/feed/`` with some values changed (None: dropped)."""
        values = {
            "user_id": self.user_id,
            "categories": ",".join(map(str, self.categories)) or None,
            "k": self.k if self.k != PAGE_K else None,
            "q": self.q or None,
            "similar": self.similar,
            **change,
        }
        query = urlencode({k: v for k, v in values.items() if v is not None})
        return f"/feed/{path}" + (f"?{query}" if query else "")


def new_user_id() -> int:
    low, high = NEW_USER_IDS
    return low + secrets.randbelow(high - low)


class FeedPage:
    """The page over open endpoints (``socialrec.serving.endpoints.Endpoints``), their
    metrics and the posts' details."""

    def __init__(self, endpoints, metrics, details: PostDetails, now=utc_now):
        self.endpoints = endpoints
        self.metrics = metrics
        self.details = details
        self.now = now
        settings = endpoints.settings
        token = settings.api_token.get_secret_value() if settings.api_token else None
        # the local profile's token is public; any other profile's never goes into a page
        self.token = token if settings.profile == "local" else None

    def _call(self, fn, *args):
        return respond("/feed", self.metrics, fn, *args)

    # --- the whole page -------------------------------------------------------------------
    def page(self, query: PageQuery) -> str:
        feed, side = "", ""
        if query.user_id is not None:
            feed = self.feed(query)
        if query.q:
            side += self.search(query)
        if query.similar is not None:
            side += self.similar(query)
        token = f'<meta name="socialrec-token" content="{esc(self.token)}">' if self.token else ""
        note = (
            ""
            if self.token
            else '<p class="note">Read-only: this page holds no write token outside the '
            "local profile, so a card has no actions (docs/feed-page.md).</p>"
        )
        problems = "".join(f'<p class="problem">{esc(p)}</p>' for p in query.problems)
        return TEMPLATE.substitute(
            token_meta=token,
            note=note + problems,
            user_form=self.user_form(query),
            new_user_form=self.new_user_form(query),
            search_form=self.search_form(query),
            feed=feed,
            side=side,
        )

    def user_form(self, query: PageQuery) -> str:
        options = "".join(f'<option value="{u}">' for u in self.details.users)
        value = "" if query.user_id is None else str(query.user_id)
        return (
            '<form id="pick-user" method="get" action="/feed/">'
            '<label>User id <input name="user_id" list="known-users" inputmode="numeric" '
            f'value="{esc(value)}" required></label>'
            f'<datalist id="known-users">{options}</datalist>'
            "<button>Show feed</button></form>"
            + (
                '<p class="known">Known users: '
                + " ".join(
                    f'<a class="known-user" href="/feed/?user_id={u}">{u}</a>'
                    for u in self.details.users[:12]
                )
                + "</p>"
                if self.details.users
                else ""
            )
        )

    def new_user_form(self, query: PageQuery) -> str:
        boxes = "".join(
            f'<label class="cat"><input type="checkbox" name="category" value="{cid}"'
            f"{' checked' if cid in query.categories else ''}> {esc(name)}</label>"
            for cid, name in sorted(self.details.categories.items())
        )
        if not boxes:
            return ""
        return (
            '<form id="new-user" method="get" action="/feed/new">'
            f"<fieldset><legend>A new user from categories</legend>{boxes}</fieldset>"
            "<button>Make a new user</button></form>"
        )

    def search_form(self, query: PageQuery) -> str:
        hidden = (
            ""
            if query.user_id is None
            else (
                f'<input type="hidden" name="user_id" value="{query.user_id}">'
                + (
                    f'<input type="hidden" name="categories" '
                    f'value="{",".join(map(str, query.categories))}">'
                    if query.categories
                    else ""
                )
            )
        )
        return (
            '<form id="search" method="get" action="/feed/">'
            f'<input name="q" type="search" maxlength="{MAX_QUERY_CHARS}" placeholder="search '
            f'posts by text" value="{esc(query.q)}" required>{hidden}<button>Search</button></form>'
        )

    # --- the lists -----------------------------------------------------------------------
    def feed(self, query: PageQuery) -> str:
        """The feed section (the part ``/feed/cards`` answers): the next k cards for the user."""
        out = self._call(
            self.endpoints.recommend, query.user_id, query.k, False, list(query.categories) or None
        )
        who = f"user {query.user_id}" + (
            f" (new; categories {', '.join(self._category(c) for c in query.categories)})"
            if query.categories
            else ""
        )
        head = (
            f'<section id="feed" data-user="{query.user_id}" '
            f'data-src="{esc(query.url("cards"))}"><h2>Feed of {esc(who)}</h2>'
        )
        if isinstance(out, ErrorAnswer):
            return head + self.error(out) + "</section>"
        source = f'<p class="source">source: <b>{esc(out.source)}</b>'
        source += f" — {esc(out.reason)}</p>" if out.reason else "</p>"
        cards = "".join(self.card(it.model_dump(), query, reasons=True) for it in out.items)
        return head + source + f'<div class="cards">{cards or "no posts"}</div></section>'

    def similar(self, query: PageQuery) -> str:
        out = self._call(self.endpoints.similar, query.similar, query.k)
        head = f'<section id="similar"><h2>Similar to post {query.similar}</h2>'
        if isinstance(out, ErrorAnswer):
            return head + self.error(out) + "</section>"
        cards = "".join(self.card(it.model_dump(), query) for it in out.items)
        return head + f'<div class="cards">{cards or "no posts"}</div></section>'

    def search(self, query: PageQuery) -> str:
        out = self._call(self.endpoints.search, query.q, query.k, query.user_id)
        head = f'<section id="results"><h2>Search: “{esc(query.q)}”</h2>'
        if isinstance(out, ErrorAnswer):
            return head + self.error(out) + "</section>"
        note = f'<p class="source">{esc(out.reason)}</p>' if out.reason else ""
        cards = "".join(self.card(it.model_dump(), query) for it in out.items)
        return head + note + f'<div class="cards">{cards or "no posts"}</div></section>'

    @staticmethod
    def error(answer: ErrorAnswer) -> str:
        detail = answer.content.get("detail")
        text = detail if isinstance(detail, str) else str(detail)
        return f'<p class="problem">{answer.status_code} {esc(str(answer.content.get("error")))}: {esc(text)}</p>'

    # --- a card ---------------------------------------------------------------------------
    def _category(self, category_id: int) -> str:
        return self.details.categories.get(int(category_id), f"category {category_id}")

    def _age(self, post_id: int) -> str:
        meta = self.endpoints.catalog.metadata([post_id])
        if not len(meta) or int(meta["created_at"].iloc[0]) <= 0:
            return "age unknown"
        seconds = max(0.0, self.now().timestamp() - float(meta["created_at"].iloc[0]))
        for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
            if seconds >= size:
                return f"{int(seconds // size)} {unit} old"
        return "just now"

    def card(self, item: dict, query: PageQuery, reasons: bool = False) -> str:
        post_id, creator = int(item["post_id"]), int(item["creator_id"])
        info = self.details.of(post_id)
        text = (
            esc(info["description"]) or "<i>(no description)</i>"
            if info
            else f"<i>post {post_id} (published after the catalog was built: no description "
            "here)</i>"
        )
        category = (info or {}).get("category_name") or self._category(item["category_id"])
        media = (info or {}).get("media_type") or "media unknown"
        who = "unknown creator" if creator < 0 else f"creator {creator}"
        meta = " · ".join(
            [esc(category), esc(who), esc(media), self._age(post_id), f"score {item['score']:.3f}"]
        )
        flags = "".join(
            f' <span class="flag">{f}</span>' for f in ("boosted", "promoted") if item.get(f)
        )
        why = ""
        if reasons and item.get("reasons"):
            why = (
                '<ul class="reasons">'
                + "".join(
                    f'<li data-code="{esc(str(r.get("code")))}">{esc(str(r.get("text")))}</li>'
                    for r in item["reasons"]
                )
                + "</ul>"
            )
        buttons = ""
        if self.token and query.user_id is not None:
            buttons = "".join(
                f'<button type="button" data-action="{a}" title="{esc(t)}">{esc(label)}</button>'
                for a, label, t in ACTIONS
            )
        similar = esc(query.url(similar=post_id))
        return (
            f'<article class="card" data-post="{post_id}" data-creator="{creator}">'
            f'<p class="desc">{text}</p><p class="meta">{meta}{flags} · '
            f'<span class="post-id">post {post_id}</span></p>{why}'
            f'<div class="actions">{buttons}<a class="similar" href="{similar}">Similar posts</a>'
            "</div></article>"
        )
