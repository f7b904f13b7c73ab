"""Terraform's own offline checks: fmt, init + validate of every root, `terraform test`.

Each check runs on a temporary copy of infra/terraform (see conftest.copy_tree), so
nothing (.terraform/, lock files) is written into the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import MODULES_WITH_TESTS, ROOT_CONFIGS, TF_DIR, TF_TEST_DIRS, Terraform


def test_fmt_check_recursive(terraform: Terraform) -> None:
    proc = terraform.run(["fmt", "-check", "-recursive", "-diff", "-no-color"], TF_DIR, check=False)
    assert proc.returncode == 0, f"terraform fmt would change:\n{proc.stdout}{proc.stderr}"


def test_root_configs_found() -> None:
    names = {str(p) for p in ROOT_CONFIGS}
    assert {"envs/dev", "envs/prod", "tests/moto-storage-queues"} <= names


@pytest.mark.parametrize("root", ROOT_CONFIGS, ids=str)
def test_init_and_validate(terraform: Terraform, tf_copy: Path, root: Path) -> None:
    workdir = tf_copy / root
    terraform.init(workdir)
    proc = terraform.run(["validate", "-no-color", "-json"], workdir, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"valid": true' in proc.stdout


def test_every_module_has_tests() -> None:
    modules = {p.name for p in (TF_DIR / "modules").iterdir() if p.is_dir()}
    # platform is exercised through the environments' terraform tests and the wiring
    # tests.
    untested = modules - {p.name for p in MODULES_WITH_TESTS} - {"platform"}
    assert not untested, f"modules without terraform tests: {sorted(untested)}"


@pytest.mark.parametrize("config", TF_TEST_DIRS, ids=str)
def test_terraform_test(terraform: Terraform, tf_copy: Path, config: Path) -> None:
    workdir = tf_copy / config
    terraform.init(workdir)
    proc = terraform.run(["test", "-no-color"], workdir, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "0 failed" in out and "Success!" in out, out


def test_no_terraform_state_in_tree() -> None:
    leftovers = [
        p
        for pattern in (".terraform", ".terraform.lock.hcl", "*.tfstate", "*.tfstate.*")
        for p in TF_DIR.rglob(pattern)
    ]
    assert not leftovers, f"terraform working files in the repository: {leftovers}"
    assert shutil.which("terraform")
