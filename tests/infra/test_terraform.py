"""Terraform's own offline checks: fmt, init + validate of every root, `terraform test`.

Each check runs on a temporary copy of infra/terraform (see conftest.copy_tree), so
nothing (.terraform/, lock files) is written into the repository.

The `terraform test` suites run two at a time in the background from the first one asked
for: each is mostly one single-threaded provider process, so the second core would
otherwise idle (about 40 % off the suites' wall time on 2 cores).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import (
    MODULES_WITH_TESTS,
    ROOT_CONFIGS,
    TF_DIR,
    TF_TEST_DIRS,
    Terraform,
    copy_tree,
)

# The slowest suites first, so the pair of workers ends together.
_SLOW_FIRST = ("modules/serving", "envs/prod", "envs/dev", "modules/storage-queues")


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


@pytest.fixture(scope="session")
def terraform_tests(
    terraform: Terraform, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[Path, Future[subprocess.CompletedProcess[str]]]]:
    tree = copy_tree(tmp_path_factory.mktemp("tf-test"))

    def suite(config: Path) -> subprocess.CompletedProcess[str]:
        terraform.init(tree / config)
        return terraform.run(["test", "-no-color"], tree / config, timeout=300, check=False)

    order = sorted(TF_TEST_DIRS, key=lambda c: (str(c) not in _SLOW_FIRST, str(c)))
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="terraform-test") as pool:
        yield {config: pool.submit(suite, config) for config in order}


@pytest.mark.parametrize("config", TF_TEST_DIRS, ids=str)
def test_terraform_test(
    terraform_tests: dict[Path, Future[subprocess.CompletedProcess[str]]], config: Path
) -> None:
    proc = terraform_tests[config].result(timeout=900)
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
