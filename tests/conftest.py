"""Shared fixtures: real audio from ../shared/audio, real models built by the project."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from sevensense.artifacts.registry import ModelRegistry
from sevensense.builders.build import (
    build_birdnet,
    build_birdnet_range,
    build_perch_contract,
    ensure_catalog_manifests,
)
from sevensense.inference.engine import EmbeddingEngine
from sevensense.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
AUDIO = REPO.parent / "shared" / "audio"
MODELS = REPO / "models"
CACHE = REPO / ".cache"

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")


def audio(name: str) -> Path:
    path = AUDIO / name
    assert path.is_file(), f"shared test audio missing: {path}"
    return path


@pytest.fixture(scope="session")
def registry() -> ModelRegistry:
    reg = ModelRegistry(MODELS)
    ensure_catalog_manifests(reg)
    return reg


@pytest.fixture(scope="session")
def birdnet_artifact(registry: ModelRegistry):  # type: ignore[no-untyped-def]
    return build_birdnet(registry, CACHE)


@pytest.fixture(scope="session")
def birdnet_range_artifact(registry: ModelRegistry):  # type: ignore[no-untyped-def]
    return build_birdnet_range(registry, CACHE)


@pytest.fixture(scope="session")
def perch_artifact(registry: ModelRegistry):  # type: ignore[no-untyped-def]
    return build_perch_contract(registry)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One real moto server on loopback for the whole run (S3, SQS, SSM, Secrets Manager):
    tests name their buckets and queues uniquely instead of getting a server each."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws_client(service: str, endpoint: str, region: str = "eu-west-1") -> Any:
    """A boto3 client for the moto server at ``endpoint`` with dummy credentials."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def make_settings(**overrides: object) -> Settings:
    settings = load_settings("default", models_dir=MODELS)
    settings.inference.providers = ["cpu"]
    settings.inference.intra_threads = 2
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        setattr(getattr(settings, section), field, value)
    return settings


@pytest.fixture(scope="session")
def engine(birdnet_artifact, perch_artifact) -> EmbeddingEngine:  # type: ignore[no-untyped-def]
    return EmbeddingEngine(make_settings())


@pytest.fixture(scope="session")
def perch_engine(perch_artifact) -> EmbeddingEngine:  # type: ignore[no-untyped-def]
    settings = make_settings(inference__model="perch-contract")
    return EmbeddingEngine(settings)


@pytest.fixture
def wav_factory(tmp_path: Path) -> Iterator[object]:
    """Write synthetic audio to a temporary file: factory(samples, rate, name, subtype)."""

    def make(
        samples: np.ndarray, rate: int, name: str = "x.wav", subtype: str | None = None
    ) -> Path:
        path = tmp_path / name
        sf.write(path, samples, rate, subtype=subtype)
        return path

    yield make


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
