"""Shared fixtures for the infrastructure tests (tests/infra).

Everything runs offline: terraform uses the hashicorp/aws provider from the filesystem
mirror on the machine image (located at run time, never hard-coded), checkov runs from
its own virtualenv with --skip-download, and the integration test talks to a moto server
on 127.0.0.1 only. Terraform always works on a temporary copy of infra/terraform so no
.terraform/ directory or lock file is left in the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
TF_DIR = INFRA_DIR / "terraform"
MODULES_DIR = TF_DIR / "modules"
ENVS_DIR = TF_DIR / "envs"
TF_TEST_ROOTS_DIR = TF_DIR / "tests"

# Root configurations: every environment plus the test roots.
ROOT_CONFIGS = sorted(
    [p.relative_to(TF_DIR) for p in ENVS_DIR.iterdir() if (p / "main.tf").exists()]
    + [p.relative_to(TF_DIR) for p in TF_TEST_ROOTS_DIR.iterdir() if (p / "main.tf").exists()]
)
# Modules and environments that carry `terraform test` suites.
MODULES_WITH_TESTS = sorted(
    p.relative_to(TF_DIR) for p in MODULES_DIR.iterdir() if list(p.glob("tests/*.tftest.hcl"))
)
TF_TEST_DIRS = MODULES_WITH_TESTS + sorted(
    p.relative_to(TF_DIR) for p in ENVS_DIR.iterdir() if list(p.glob("tests/*.tftest.hcl"))
)


def find_provider_mirror() -> Path | None:
    """Root of the filesystem mirror holding registry.terraform.io/hashicorp/aws."""
    override = os.environ.get("SEVENSENSE_TF_PLUGIN_DIR")
    if override:
        return Path(override)
    proc = subprocess.run(
        [
            "find",
            "/",
            "-path",
            "/proc",
            "-prune",
            "-o",
            "-path",
            "*registry.terraform.io/hashicorp/aws*",
            "-name",
            "terraform-provider-aws*",
            "-print",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        path = Path(line)
        for parent in path.parents:
            if parent.name == "registry.terraform.io":
                return parent.parent
    return None


@dataclass(frozen=True)
class Terraform:
    """Runs terraform offline against the provider mirror."""

    binary: str
    mirror: Path
    env: dict[str, str]

    def run(
        self, args: list[str], cwd: Path, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"terraform {' '.join(args)} failed in {cwd} (rc={proc.returncode})\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc

    def init(self, cwd: Path) -> None:
        self.run(
            ["init", "-backend=false", f"-plugin-dir={self.mirror}", "-input=false", "-no-color"],
            cwd,
        )


@pytest.fixture(scope="session")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    binary = shutil.which("terraform")
    if binary is None:
        pytest.fail("terraform is not on PATH (the CI machine image provides Terraform 1.11)")
    mirror = find_provider_mirror()
    if mirror is None:
        pytest.fail("no hashicorp/aws provider mirror found (registry.terraform.io/hashicorp/aws)")
    cfg_dir = tmp_path_factory.mktemp("tf-cli")
    cli_config = cfg_dir / "terraformrc"
    # Offline: providers come only from the mirror, never from a registry.
    cli_config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path    = "{mirror}"\n'
        '    include = ["registry.terraform.io/hashicorp/*"]\n  }\n'
        "}\n"
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TF_", "AWS_")) or k == "TF_LOG"
    }
    env.update(
        TF_CLI_CONFIG_FILE=str(cli_config),
        CHECKPOINT_DISABLE="1",
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        # Never let a stray profile or instance role reach real AWS.
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return Terraform(binary=binary, mirror=mirror, env=env)


def copy_tree(dest: Path) -> Path:
    """Copy infra/terraform (without any .terraform leftovers) to dest; return the copy."""
    target = dest / "terraform"
    shutil.copytree(
        TF_DIR,
        target,
        ignore=shutil.ignore_patterns(".terraform", ".terraform.lock.hcl", "*.tfstate*"),
    )
    return target


@pytest.fixture
def tf_copy(tmp_path: Path) -> Iterator[Path]:
    yield copy_tree(tmp_path)
