"""The feed page: plain server-rendered HTML over the service's endpoints (``render``), a
template and a little script (``static/``); ``bentos/page.py`` mounts it at ``/feed``."""

from socialrec.serving.page.render import STATIC_DIR, FeedPage, PageQuery

__all__ = ["STATIC_DIR", "FeedPage", "PageQuery"]
