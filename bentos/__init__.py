"""BentoML services of socialrec: ``service.py`` (the recommender) and ``package.py`` (model
store import + ``bentoml build``, called by the ``recommender_bento`` asset)."""
