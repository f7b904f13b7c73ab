"""Conventions of the Terraform code, checked syntactically with python-hcl2.

- every variable has a description and a type; every output has a description;
- only the hashicorp/aws provider, constrained to ~> 5.0, anywhere;
- provider blocks only in root configurations (modules stay reusable);
- every environment declares the S3 backend (configured at init time).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from .conftest import ENVS_DIR, MODULES_DIR, TF_DIR

TF_FILES = sorted(TF_DIR.rglob("*.tf"))
ALLOWED_RESOURCE_PREFIX = "aws_"


def _load(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return hcl2.load(fh)


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _blocks(doc: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            if name != "__is_block__":
                out.append((_unquote(name), body))
    return out


def test_tree_is_not_empty() -> None:
    assert len(TF_FILES) > 30


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TF_DIR)))
def test_variables_and_outputs_are_documented(path: Path) -> None:
    doc = _load(path)
    for name, body in _blocks(doc, "variable"):
        assert len(_unquote(body.get("description", ""))) >= 10, f"{path}: var.{name} description"
        assert "type" in body, f"{path}: var.{name} has no type"
    for name, body in _blocks(doc, "output"):
        assert len(_unquote(body.get("description", ""))) >= 10, f"{path}: output.{name}"


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TF_DIR)))
def test_only_the_aws_provider(path: Path) -> None:
    doc = _load(path)
    for kind in ("resource", "data"):
        for entry in doc.get(kind, []):
            for rtype in entry:
                if rtype == "__is_block__":
                    continue
                assert _unquote(rtype).startswith(ALLOWED_RESOURCE_PREFIX), f"{path}: {rtype}"
    for tf in doc.get("terraform", []):
        for rp in tf.get("required_providers", []):
            providers = {k: v for k, v in rp.items() if k != "__is_block__"}
            assert set(providers) == {"aws"}, f"{path}: providers {set(providers)}"
            assert _unquote(providers["aws"]["source"]) == "hashicorp/aws"
            assert _unquote(providers["aws"]["version"]) == "~> 5.0"
    for name, _ in _blocks(doc, "provider"):
        assert name == "aws", f"{path}: provider {name}"


def test_modules_declare_no_provider_blocks() -> None:
    for path in MODULES_DIR.rglob("*.tf"):
        assert not _load(path).get("provider"), f"{path}: provider block inside a module"


def test_every_module_constrains_the_provider() -> None:
    for module in sorted(p for p in MODULES_DIR.iterdir() if p.is_dir()):
        text = (module / "versions.tf").read_text()
        assert re.search(r'source\s*=\s*"hashicorp/aws"', text), module
        assert re.search(r'version\s*=\s*"~> 5\.0"', text), module


@pytest.mark.parametrize("env", sorted(p.name for p in ENVS_DIR.iterdir() if p.is_dir()))
def test_environments_declare_s3_backend(env: str) -> None:
    doc = _load(ENVS_DIR / env / "main.tf")
    (tf,) = doc["terraform"]
    backends = [k for b in tf.get("backend", []) for k in b if k != "__is_block__"]
    assert [_unquote(b) for b in backends] == ["s3"]
    assert (ENVS_DIR / env / "backend.hcl.example").read_text().count("use_lockfile") >= 1
