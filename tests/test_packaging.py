"""environment.yml installs exactly pyproject's dependencies (plus the package itself).

python -m pytest -q tests/test_packaging.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO_ROOT = Path(__file__).resolve().parent.parent
SELF = "-e .[test]"


def project_dependencies() -> list[str]:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def conda_pip_list() -> list[str]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip: section"
    return pip[0]


def test_environment_yml_mirrors_pyproject():
    pip = conda_pip_list()
    assert SELF in pip
    assert sorted(p for p in pip if p != SELF) == sorted(project_dependencies())
    assert len(pip) == len(set(pip))


def test_environment_yml_basics():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert env["name"] == "sair"
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]


def test_console_script_and_ci_entry_point():
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        assert tomllib.load(f)["project"]["scripts"]["sair"] == "sairlib.run:main"
    ci = REPO_ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    assert "scripts/test.sh" in ci.read_text()
