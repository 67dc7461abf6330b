"""environment.yml lists exactly pyproject.toml's dependencies (all extras), with the same version specs."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.conftest import REPO

# pip distribution name -> conda-forge package name, where they differ.
CONDA_NAMES = {"torch": "pytorch", "dask": "dask-core"}
NOT_PYPROJECT = {"python", "pip"}


def _split(requirement: str) -> tuple[str, str]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*?)\s*", requirement)
    assert match, requirement
    return match.group(1).lower().replace("_", "-"), match.group(3).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return dict(_split(r) for r in requirements)


def _environment() -> dict[str, str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    found: dict[str, str] = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                if not line.startswith("-"):
                    name, spec = _split(line)
                    found[name] = spec
        else:
            name, spec = _split(entry)
            if name not in NOT_PYPROJECT:
                found[name] = spec
    return found


def test_environment_matches_pyproject():
    wanted = {CONDA_NAMES.get(name, name): spec for name, spec in _pyproject().items()}
    assert _environment() == wanted


def test_environment_installs_dsmar_itself():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(e["pip"] for e in env["dependencies"] if isinstance(e, dict))
    assert "-e ." in pip
    assert env["channels"][0] == "conda-forge"
