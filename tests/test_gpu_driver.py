"""Whether the host's NVIDIA driver can run the CUDA this onnxruntime-gpu was built for, and
the readiness reason the GPU model service gives when it cannot."""

from __future__ import annotations

import pynvml
import pytest

from sevensense.inference.gpu_driver import assess_driver, cuda_text, probe_driver, required_cuda
from sevensense.inference.sessions import preload_cuda_libraries
from sevensense.serving.model_service.host import ModelHost
from tests.conftest import make_settings


def nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_cuda_version_integers_read_as_nvml_writes_them() -> None:
    assert cuda_text(13000) == "13.0"
    assert cuda_text(12090) == "12.9"
    assert cuda_text(13010) == "13.1"


def test_the_build_needs_cuda_13() -> None:
    assert required_cuda() == "13.0"


@pytest.mark.parametrize(
    ("driver", "cuda", "required"),
    [("580.65.06", 13000, "13.0"), ("590.44.01", 13010, "13.0"), ("535.230.02", 12020, "12.0")],
)
def test_new_enough_drivers(driver: str, cuda: int, required: str) -> None:
    check = assess_driver(driver, cuda, required)
    assert check.ok and check.reason is None
    assert check.driver_version == driver and check.cuda_version == cuda_text(cuda)


@pytest.mark.parametrize(
    ("driver", "cuda", "shown"),
    [("575.57.08", 12090, "12.9"), ("550.163.01", 12040, "12.4"), ("535.247.01", 12020, "12.2")],
)
def test_too_old_drivers_are_named(driver: str, cuda: int, shown: str) -> None:
    check = assess_driver(driver, cuda, "13.0")
    assert not check.ok and check.reason
    assert driver in check.reason and f"up to {shown}" in check.reason
    assert "needs CUDA 13.0" in check.reason and ">= 580" in check.reason


def test_a_580_branch_reporting_an_older_cuda_is_refused() -> None:
    check = assess_driver("580.65.06", 12090, "13.0")
    assert not check.ok and "up to 12.9" in (check.reason or "")


def test_unreadable_version_is_a_reason_not_a_crash() -> None:
    check = assess_driver("rc-build", 13000, "13.0")
    assert not check.ok and "rc-build" in (check.reason or "")


def test_probe_reports_no_driver_without_a_gpu() -> None:
    check = probe_driver()
    if nvml_works():  # a GPU host: the real driver is reported
        assert check.driver_version and check.cuda_version
        return
    assert not check.ok and check.driver_version is None
    assert (check.reason or "").startswith("no NVIDIA driver found by NVML (")


def test_gpu_model_service_unready_names_the_driver() -> None:
    host = ModelHost("gpu", make_settings())
    host.start(["birdnet-v2.4"])
    if nvml_works():
        assert (host.status().driver or "").endswith(")")  # "580.178.04 (CUDA 13.0)"
        return
    assert not host.ready and host.status().driver is None
    assert (host.reason or "").startswith("no NVIDIA driver found by NVML")
    assert host.status().reason == host.reason


def test_preloading_absent_cuda_libraries_is_quiet_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The dev venv has no nvidia wheels: preload_dlls() fails; nothing reaches stdout (the
    CLI prints JSON there) and the answer is False, the same on a second call."""
    if nvml_works():
        return
    assert preload_cuda_libraries() is False
    assert preload_cuda_libraries() is False
    assert capsys.readouterr().out == ""
