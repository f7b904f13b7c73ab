"""The NVIDIA driver the GPU model service runs on, read through NVML.

The CUDA runtime comes with the image (wheels), the driver with the host: a host whose
driver is older than the runtime needs cannot run a single CUDA kernel, and ONNX Runtime
would then quietly create every session on the CPU. So the GPU service asks NVML at
start-up and says in its readiness reason which driver it found and what it lacks.
"""

from __future__ import annotations

import logging

import onnxruntime as ort
from pydantic import BaseModel

log = logging.getLogger(__name__)

# The oldest driver branch each CUDA major runs on (NVIDIA's CUDA toolkit release notes,
# "minor version compatibility": 12.x from 525, 13.x from 580).
MIN_DRIVER = {12: 525, 13: 580}


class DriverCheck(BaseModel):
    driver_version: str | None = None
    cuda_version: str | None = None  # the highest CUDA the driver supports, "13.0"
    required_cuda: str
    ok: bool
    reason: str | None = None


def cuda_text(version: int) -> str:
    """NVML's CUDA version integer (1000 x major + 10 x minor) as text: 13000 -> "13.0"."""
    return f"{version // 1000}.{version % 1000 // 10}"


def required_cuda() -> str:
    """The CUDA version this onnxruntime-gpu build was compiled against ("13.0")."""
    from onnxruntime.capi import build_and_package_info

    return str(getattr(build_and_package_info, "cuda_version", "") or "")


def assess_driver(
    driver_version: str | None,
    cuda_version: int | None,
    required: str,
    *,
    error: str | None = None,
) -> DriverCheck:
    """Whether a driver (NVML's version string and CUDA integer) can run CUDA ``required``;
    the reason names the driver and the minimum when it cannot."""
    if driver_version is None:
        detail = f" ({error})" if error else ""
        return DriverCheck(
            required_cuda=required, ok=False, reason=f"no NVIDIA driver found by NVML{detail}"
        )
    cuda = cuda_text(cuda_version) if cuda_version else None
    check = {"driver_version": driver_version, "cuda_version": cuda, "required_cuda": required}
    try:
        req_major, req_minor = (int(p) for p in required.split(".")[:2])
        branch = int(driver_version.split(".")[0])
    except ValueError:
        return DriverCheck(
            **check, ok=False, reason=f"cannot read driver {driver_version!r} / CUDA {required!r}"
        )
    minimum = MIN_DRIVER.get(req_major)
    too_old_branch = minimum is not None and branch < minimum
    too_old_cuda = cuda_version is not None and cuda_version < req_major * 1000 + req_minor * 10
    if too_old_branch or too_old_cuda:
        need = f"driver >= {minimum}" if minimum else f"a driver for CUDA {required}"
        return DriverCheck(
            **check,
            ok=False,
            reason=(
                f"NVIDIA driver {driver_version} is too old: it supports CUDA up to "
                f"{cuda or 'unknown'}, onnxruntime-gpu {ort.__version__} needs CUDA {required} "
                f"({need})"
            ),
        )
    return DriverCheck(**check, ok=True)


def probe_driver() -> DriverCheck:
    """Ask NVML (the driver's libnvidia-ml.so.1) for the driver and its CUDA version."""
    import pynvml

    required = required_cuda()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return assess_driver(None, None, required, error=str(exc))
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        driver = version.decode() if isinstance(version, bytes) else str(version)
        cuda: int | None = int(pynvml.nvmlSystemGetCudaDriverVersion_v2())
    except pynvml.NVMLError as exc:
        return assess_driver(None, None, required, error=str(exc))
    finally:
        pynvml.nvmlShutdown()
    return assess_driver(driver, cuda, required)
