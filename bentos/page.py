"""The feed page (``socialrec.serving.page``) as a Starlette app that ``bentos/service.py``
mounts at ``/feed`` (BentoML's ``@bentoml.asgi_app``). Its routes run in the service's workers
and reach the service's ``FeedPage`` through ``bentoml.get_current_service()``:

* ``GET /feed/`` the page (``?user_id=&categories=&k=&q=&similar=``);
* ``GET /feed/cards`` the feed section alone (what the page's script fetches after an action);
* ``GET /feed/new?category=..`` a new user from categories: a redirect to their feed;
* ``GET /feed/static/*`` the page's script and style sheet.
"""

from __future__ import annotations

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from socialrec.serving.page import STATIC_DIR, PageQuery
from socialrec.serving.page.render import new_user_id

HEADERS = {"Cache-Control": "no-store"}  # a feed is never the same twice


def _page():
    return bentoml.get_current_service().page


def page(request: Request) -> HTMLResponse:
    return HTMLResponse(_page().page(PageQuery.parse(request.query_params)), headers=HEADERS)


def cards(request: Request) -> HTMLResponse:
    query = PageQuery.parse(request.query_params)
    if query.user_id is None:
        return HTMLResponse('<p class="problem">no user_id</p>', status_code=400)
    return HTMLResponse(_page().feed(query), headers=HEADERS)


def new_user(request: Request) -> RedirectResponse:
    categories = ",".join(request.query_params.getlist("category"))
    query = PageQuery.parse({"user_id": str(new_user_id()), "categories": categories})
    return RedirectResponse(query.url(), status_code=303)


app = Starlette(
    routes=[
        Route("/", page),
        Route("/cards", cards),
        Route("/new", new_user),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
)
