"""orchestration/warm.py: the demo's process that compiles the later steps' imports."""

import importlib.util
import py_compile
import subprocess
import sys

from orchestration import warm


def test_compiled_reads_the_bytecode_of_a_package_init(tmp_path, monkeypatch):
    pkg = tmp_path / "warm_probe_pkg"
    pkg.mkdir()
    init = pkg / "__init__.py"
    init.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert not warm.compiled("warm_probe_pkg")
    py_compile.compile(str(init), cfile=importlib.util.cache_from_source(str(init)))
    assert warm.compiled("warm_probe_pkg")
    assert not warm.compiled("no_such_package_at_all")
    assert not warm.compiled("sys")  # built in: nothing to compile


def test_needed_only_where_bytecode_is_kept_and_missing(monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(warm, "compiled", lambda package: True)
    assert not warm.needed()  # a second demo: compiled already
    monkeypatch.setattr(warm, "compiled", lambda package: package != "transformers")
    assert warm.needed()
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # nothing would be kept
    assert not warm.needed() and warm.start() is None


def test_warming_imports_every_stack_it_names():
    """The process itself, for real: every module and package it names exists, and it ends
    with 0 (its output is dropped in the demo, so a broken name would only be slower)."""
    for name in (*warm.MODULES, *warm.PACKAGES):
        assert importlib.util.find_spec(name) is not None, name
    done = subprocess.run(
        [sys.executable, "-m", "orchestration.warm"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
