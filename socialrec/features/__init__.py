"""Features: the Feast feature tables and store, the ranking features and the text encoder.

Importing this package first keeps Feast's import cheap (:func:`_feast_without_typeguard`)."""

from __future__ import annotations

import sys


def _feast_without_typeguard() -> None:
    """Make typeguard's ``@typechecked`` a no-op before Feast is imported. Feast decorates
    ~20 of its classes and functions with it, and typeguard instruments each one at import:
    it parses and compiles the source of the whole module again (no bytecode cache), ~3.5 s
    of every process that imports Feast (the materialization, each service worker, each
    replay process, the Dagster code server, the tests). What it would check are the types of
    the arguments of Feast's constructors and methods, which this code base calls with fixed
    types that its tests exercise. typeguard's own switch is Python's ``-O``, which would also
    drop every ``assert`` and the bytecode ``make install`` compiles. Feast is the only
    package of the lock file that uses typeguard."""
    if "feast" in sys.modules:
        return  # imported already: instrumented

    import typeguard

    def typechecked(target=None, **_):
        return (lambda f: f) if target is None else target

    typeguard.typechecked = typechecked


_feast_without_typeguard()
