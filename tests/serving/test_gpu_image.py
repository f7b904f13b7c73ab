"""The Bento's image can load ONNX Runtime's CUDA provider: every shared library the provider
needs, directly or through the libraries it pulls in, is installed by the serving
requirements' wheels or is part of the Debian base, except the driver's ``libcuda.so.1``,
which the host's NVIDIA container runtime mounts.

No GPU is needed: the provider's dynamic section is read from the ``.venv`` copy (the same
wheel the Bento installs), the wheels' from their zip members as the configured package
index serves them (resolved with pip, exactly the pinned versions). Parsed sections and the
resolution are cached under ``.cache/gpu-image`` (keyed by the pins and wheel file names,
which never change for a version), so only the first run reads the 1.5 GB of libraries.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import onnxruntime
import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import CACHE, REPO
from tests.elf_needed import read_dynamic

PROVIDER = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
GPU_CACHE = CACHE / "gpu-image"
# What python:3.11-slim (Debian) has without any apt package: glibc, the GCC runtime and
# libstdc++ (apt itself needs them), zlib (Python's own zlib module needs it).
DEBIAN_BASE = frozenset(
    {
        "ld-linux-x86-64.so.2",
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "librt.so.1",
        "libpthread.so.0",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "libz.so.1",
    }
)
# The driver's user-space library: only the host can provide it (the NVIDIA container
# runtime mounts the host driver's copy), and it must match the kernel module.
DRIVER = frozenset({"libcuda.so.1"})


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def serving_pins() -> dict[str, str]:
    text = (REPO / "requirements" / "serving.txt").read_text()
    pairs = (line.split("==", 1) for line in text.splitlines() if "==" in line)
    return {canonical(n): v.strip() for n, v in pairs}


def nvidia_runtime_pins(pins: dict[str, str]) -> dict[str, str]:
    """The CUDA runtime wheels (nvidia-ml-py is the NVML binding, pure Python)."""
    return {n: v for n, v in pins.items() if n.startswith("nvidia-") and n != "nvidia-ml-py"}


def local_indexes() -> list[str]:
    """The file:// package indexes pip is configured with: resolving against them only keeps
    the test offline (pip would otherwise ask the remote index first for every name)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], check=False, capture_output=True, text=True
    ).stdout
    urls: list[str] = []
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(("index-url", "extra-index-url")):
            urls += [u for u in value.strip("'\"").split() if u.startswith("file://")]
    return urls


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    path: Path
    requires: tuple[str, ...]


def resolve_wheels(pins: dict[str, str]) -> list[Wheel]:
    """The wheel files pip would install for the pinned versions on this platform."""
    GPU_CACHE.mkdir(parents=True, exist_ok=True)
    key = "-".join(f"{n}=={v}" for n, v in sorted(pins.items()))
    cached = GPU_CACHE / "resolution.json"
    data = json.loads(cached.read_text()) if cached.exists() else {}
    if data.get("key") == key:
        known = [
            Wheel(w["name"], w["version"], Path(w["path"]), tuple(w["requires"]))
            for w in data["wheels"]
        ]
        if all(w.path.exists() for w in known):
            return known
    indexes = local_indexes()
    index_args = (
        ["--index-url", indexes[0], *(a for u in indexes[1:] for a in ("--extra-index-url", u))]
        if indexes
        else []
    )
    report = GPU_CACHE / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--no-deps", "--only-binary", ":all:", "--report", str(report), *index_args,
         *(f"{n}=={v}" for n, v in sorted(pins.items()))],
        check=True, capture_output=True,
    )  # fmt: skip
    wheels: list[Wheel] = []
    download = GPU_CACHE / "wheels"
    for item in json.loads(report.read_text())["install"]:
        meta = item["metadata"]
        url = urlparse(item["download_info"]["url"])
        path = Path(unquote(url.path))
        if url.scheme != "file":  # a remote index: fetch the wheel once
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                 "-d", str(download), f"{meta['name']}=={meta['version']}"],
                check=True, capture_output=True,
            )  # fmt: skip
            path = download / path.name
        wheels.append(
            Wheel(canonical(meta["name"]), meta["version"], path,
                  tuple(meta.get("requires_dist") or ()))
        )  # fmt: skip
    cached.write_text(
        json.dumps({"key": key, "wheels": [
            {"name": w.name, "version": w.version, "path": str(w.path),
             "requires": list(w.requires)} for w in wheels]})
    )  # fmt: skip
    return wheels


@dataclass(frozen=True)
class Lib:
    wheel: Wheel
    member: str


class Libraries:
    """Shared libraries of the installed wheels by file name, with cached dynamic sections."""

    def __init__(self, wheels: list[Wheel]) -> None:
        self.by_name: dict[str, Lib] = {}
        self.members: set[str] = set()
        for w in wheels:
            with zipfile.ZipFile(w.path) as z:
                for member in z.namelist():
                    self.members.add(member)
                    base = member.rsplit("/", 1)[-1]
                    if ".so" in base:
                        self.by_name.setdefault(base, Lib(w, member))
        self._cache_file = GPU_CACHE / "dynamic.json"
        self._cache: dict[str, list[str]] = (
            json.loads(self._cache_file.read_text()) if self._cache_file.exists() else {}
        )

    def needed(self, lib: Lib) -> list[str]:
        key = f"{lib.wheel.path.name}/{lib.member}"
        if key not in self._cache:
            with zipfile.ZipFile(lib.wheel.path) as z, z.open(lib.member) as f:
                self._cache[key] = list(read_dynamic(f).needed)  # type: ignore[arg-type]
            self._cache_file.write_text(json.dumps(self._cache))
        return self._cache[key]


def preload_paths() -> list[str]:
    """What ``onnxruntime.preload_dlls()`` loads on Linux, relative to site-packages; the
    provider finds its CUDA libraries only because these are loaded first (it has no RUNPATH
    into the nvidia wheels)."""
    paths = onnxruntime._get_nvidia_dll_paths(is_windows=False, cuda=True, cudnn=True)
    return ["/".join(p) for p in paths]


def closure(roots: list[str], libs: Libraries, base_image: frozenset[str]) -> Iterator[str]:
    """Every library name reached from the roots that nothing in the image provides."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in DEBIAN_BASE or name in base_image:
            continue
        lib = libs.by_name.get(name)
        if lib is None:
            yield name
            continue
        todo += libs.needed(lib)


def cuda_base_libs(cuda_version: str | None) -> frozenset[str]:
    """The CUDA libraries a `docker.cuda_version` base image (nvidia/cuda:<v>-cudnn-runtime)
    would add, by soname."""
    if cuda_version is None:
        return frozenset()
    major = cuda_version.split(".")[0]
    return frozenset(
        {f"libcudart.so.{major}", f"libcublas.so.{major}", f"libcublasLt.so.{major}",
         f"libnvrtc.so.{major}", "libcurand.so.10", "libcudnn.so.9"}
    )  # fmt: skip


@pytest.fixture(scope="module")
def bento_docker() -> dict[str, object]:
    config = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    docker: dict[str, object] = config.get("docker") or {}
    return docker


@pytest.fixture(scope="module")
def wheels() -> list[Wheel]:
    pins = nvidia_runtime_pins(serving_pins())
    return resolve_wheels(pins) if pins else []


def test_serving_requirements_install_one_onnxruntime() -> None:
    pins = serving_pins()
    assert "onnxruntime-gpu" in pins
    assert "onnxruntime" not in pins, "the CPU wheel would overwrite the GPU one's module"


def test_gpu_wheels_pins_are_a_closed_set(wheels: list[Wheel]) -> None:
    """onnxruntime-gpu's [cuda,cudnn] extras and every wheel's own requirements are pinned,
    at versions that satisfy them: pip installs nothing unpinned into the image."""
    pins = serving_pins()
    wanted = [
        Requirement(r)
        for r in metadata.requires("onnxruntime-gpu") or []
        if any(f'extra == "{e}"' in r for e in ("cuda", "cudnn"))
    ]
    wanted += [Requirement(r) for w in wheels for r in w.requires]
    assert wanted
    for req in wanted:
        name = canonical(req.name)
        assert name in pins, f"{req} is not pinned in requirements/serving.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req} vs {pins[name]}"
    assert {w.name: w.version for w in wheels} == nvidia_runtime_pins(pins)


def test_bento_uses_no_cuda_base_image_of_another_major(bento_docker: dict[str, object]) -> None:
    """A CUDA base image must match the provider's CUDA major (a 12.x base adds GBs the
    CUDA 13 provider cannot use); with the runtime from wheels, none is needed."""
    from onnxruntime.capi import build_and_package_info

    ort_major = build_and_package_info.cuda_version.split(".")[0]
    cuda = bento_docker.get("cuda_version")
    assert cuda is None or str(cuda).split(".")[0] == ort_major, (
        f"bentofile.yaml docker.cuda_version {cuda}; onnxruntime-gpu needs CUDA {ort_major}"
    )


def test_cuda_provider_resolves_in_the_image(
    wheels: list[Wheel], bento_docker: dict[str, object]
) -> None:
    libs = Libraries(wheels)
    with PROVIDER.open("rb") as f:
        provider_needs = list(read_dynamic(f).needed)
    preload = preload_paths()
    missing_preload = [p for p in preload if p not in libs.members]
    assert not missing_preload, f"preload_dlls() would not find {missing_preload}"
    # cuDNN dlopens its sub-libraries; they resolve through their RUNPATH ($ORIGIN, cu13/lib).
    cudnn_parts = sorted(n for n in libs.by_name if n.startswith("libcudnn_"))
    roots = provider_needs + [p.rsplit("/", 1)[-1] for p in preload] + cudnn_parts
    base = cuda_base_libs(
        None if bento_docker.get("cuda_version") is None else str(bento_docker["cuda_version"])
    )
    missing = set(closure(roots, libs, base))
    assert missing == DRIVER, f"not in the image: {sorted(missing - DRIVER)}"
    # Without a RUNPATH, the provider finds the CUDA libraries only because preload_dlls()
    # loaded the same sonames first.
    own = {n for n in provider_needs if n not in DEBIAN_BASE | DRIVER}
    assert own <= {p.rsplit("/", 1)[-1] for p in preload}
