"""The recommender bento's Python packages are locked from uv.lock (bentos/requirements.txt).

Offline and fast: ``uv export --frozen`` reads the lock only, and BentoML's own build step for
the Python environment copies the (already locked) file without resolving anything.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "bentos" / "requirements.txt"
BENTOFILE = ROOT / "bentos" / "bentofile.yaml"
LOCK_SCRIPT = ROOT / "deploy" / "lock-bento-requirements.sh"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(;.*)?$")
# third-party modules the service's code imports that the bento does not need: the local
# Milvus server wheel (started by the local profile's assets and tests, never by the service)
NOT_IN_BENTO = {"milvus"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = PIN.match(line)
        assert m, f"not an exact pin: {line!r}"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def _uv() -> str:
    found = shutil.which(
        "uv",
        path=os.pathsep.join([str(Path(sys.executable).parent), *[os.environ.get("PATH", "")]]),
    )
    if found is None:
        pytest.skip("no uv executable (neither in the venv nor on PATH)")
    return found


def test_bentofile_points_at_the_locked_requirements():
    python = yaml.safe_load(BENTOFILE.read_text())["python"]
    assert python["requirements_txt"] == "bentos/requirements.txt"
    assert "packages" not in python  # BentoML would ignore it next to requirements_txt
    assert python["lock_packages"] is False  # already locked: no resolver at build time
    assert "https://download.pytorch.org/whl/cpu" in python["extra_index_url"]


def test_requirements_are_the_export_of_uv_lock():
    out = subprocess.run(
        ["bash", str(LOCK_SCRIPT)],
        env={**os.environ, "UV": _uv()},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out == REQUIREMENTS.read_text(), (
        "bentos/requirements.txt is out of date with uv.lock: "
        "deploy/lock-bento-requirements.sh > bentos/requirements.txt"
    )


def test_every_pin_is_the_version_in_uv_lock():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {_norm(p["name"]): p["version"] for p in lock["package"]}
    pins = _pins()
    assert pins, "no packages"
    assert {k: v for k, v in pins.items() if locked.get(k) != v} == {}
    # the CPU build of torch, and none of the Dagster side
    assert pins["torch"] == "2.13.0+cpu"
    assert pins["bentoml"] == locked["bentoml"]
    assert not {"dagster", "dbt-core", "mlflow", "milvus", "matplotlib"} & set(pins)


def _service_imports() -> set[str]:
    """Top-level third-party modules imported anywhere in bentos/service.py's import closure
    of project modules (function-level imports included)."""
    todo, seen, third = ["bentos.service"], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = ROOT.joinpath(*name.split("."))
        file = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
        if not file.exists():
            continue  # a name imported from a module, not a module
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top in ("socialrec", "bentos"):
                    todo.append(n)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third.add(top)
    return third


def test_every_module_the_service_imports_is_in_the_bento():
    imports = _service_imports()
    assert {"bentoml", "tensorflow", "catboost", "feast", "pymilvus", "cassandra"} <= imports
    dists = importlib.metadata.packages_distributions()
    pins = _pins()
    missing = {
        module: dists.get(module, [])
        for module in imports - NOT_IN_BENTO
        if not any(_norm(d) in pins for d in dists.get(module, []))
    }
    assert missing == {}, f"imported by the service but not in bentos/requirements.txt: {missing}"


def test_bentoml_build_copies_the_locked_file(tmp_path):
    """BentoML's build step of the bento's Python environment: no resolver, no network."""
    from bentoml._internal.bento.build_config import BentoBuildConfig

    with BENTOFILE.open() as f:
        config = BentoBuildConfig.from_yaml(f).with_defaults()
    config.python.write_to_bento(tmp_path, build_ctx=str(ROOT))
    env = tmp_path / "env" / "python"
    assert not (env / "requirements.lock.txt").exists()  # nothing re-resolved
    written = (env / "requirements.txt").read_text()
    assert 'torch==2.13.0+cpu; platform_machine == "x86_64"' in written
    assert f"bentoml=={_pins()['bentoml']}" in written
    assert (
        "--extra-index-url https://download.pytorch.org/whl/cpu" in (env / "install.sh").read_text()
    )
