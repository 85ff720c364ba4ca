"""The parts of ``benchmarks/serving.py`` (a subpackage, so that the Makefile's
``bench-<name>`` targets, one per ``benchmarks/*.py``, stay the real benchmarks)."""
