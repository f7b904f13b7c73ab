"""Profiles (ADR-007 §2.3 and Appendix A) and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevensense.errors import ConfigError
from sevensense.profiles import PROFILE_NAMES
from sevensense.settings import load_settings


def test_every_profile_loads_with_the_adr_figures() -> None:
    expected = {
        "default": (8, None, ["cuda", "coreml", "cpu"]),
        "field": (1, 0.25, ["cpu"]),
        "edge": (16, 0.5, ["cuda", "cpu"]),
        "server": (32, 0.5, ["cuda", "cpu"]),
        "cloud": (64, 0.75, ["cuda", "cpu"]),
    }
    assert set(PROFILE_NAMES) == set(expected)
    for name, (batch, overlap, providers) in expected.items():
        s = load_settings(name)
        assert s.profile == name
        assert s.inference.max_batch_size == batch
        assert s.preprocessing.window_overlap == overlap
        assert s.inference.providers == providers
    chains = {  # ADR-007 Appendix A; default and server add the CPU path and the queue
        "field": ["deferred_queue"],
        "edge": ["quantized_model", "cached_embedding", "zero_vector"],
        "cloud": ["quantized_model", "cached_embedding"],
        "default": ["cpu", "quantized_model", "cached_embedding", "deferred_queue"],
        "server": ["cpu", "quantized_model", "cached_embedding", "deferred_queue"],
    }
    assert {n: load_settings(n).fallback.strategies for n in chains} == chains
    assert load_settings("field").serving.gpu_enabled is False
    assert load_settings("field").inference.model_variant == "quantized"
    assert load_settings("cloud").verification.enable_birdnet is True


def test_env_overrides_profile_and_arguments_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEVENSENSE_INFERENCE__MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("SEVENSENSE_PROFILE", "edge")
    s = load_settings()
    assert s.profile == "edge" and s.inference.max_batch_size == 3
    assert s.inference.intra_threads == 4  # still from the edge profile
    assert load_settings("edge", top_k=9).top_k == 9


def test_custom_profile_file(tmp_path: Path) -> None:
    path = tmp_path / "lab.toml"
    path.write_text('[inference]\nmax_batch_size = 5\n[preprocessing]\npadding = "reflect"\n')
    s = load_settings(str(path))
    assert s.inference.max_batch_size == 5 and s.preprocessing.padding == "reflect"


def test_bad_profiles_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile"):
        load_settings("moon")
    path = tmp_path / "bad.toml"
    path.write_text("[inference]\nmax_batch_size = 0\n")
    with pytest.raises(ConfigError, match="max_batch_size"):
        load_settings(str(path))
    path.write_text("[inference]\nwarp_drive = true\n")
    with pytest.raises(ConfigError, match="warp_drive"):
        load_settings(str(path))


def test_terraform_env_names_map_onto_serving_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEVENSENSE_GPU_URL", "http://model-gpu:3000")
    monkeypatch.setenv("SEVENSENSE_CPU_URL", "http://model-cpu:3000")
    monkeypatch.setenv("SEVENSENSE_CANARY_PARAM", "/7sense/prod/canary")
    monkeypatch.setenv("SEVENSENSE_SERVING__MAX_UPLOAD_MB", "7")
    settings = load_settings("cloud")
    assert settings.serving.gpu_url == "http://model-gpu:3000"
    assert settings.serving.cpu_url == "http://model-cpu:3000"
    assert settings.serving.rollout_store == "ssm"
    assert settings.serving.canary_param == "/7sense/prod/canary"
    assert settings.serving.max_upload_mb == 7.0
    monkeypatch.setenv("SEVENSENSE_SERVING__GPU_URL", "http://elsewhere:3000")
    assert load_settings("cloud").serving.gpu_url == "http://elsewhere:3000"


def test_terraform_env_names_reach_queue_and_worker_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/sevensense-deferred"
    monkeypatch.setenv("SEVENSENSE_DEFERRED_QUEUE_URL", url)
    monkeypatch.setenv("SEVENSENSE_PAYLOAD_STORE", "s3://out-bucket/deferred")
    monkeypatch.setenv("SEVENSENSE_BATCH_QUEUE_URL", url + "-batch")
    monkeypatch.setenv("SEVENSENSE_VISIBILITY_TIMEOUT_S", "1200")
    monkeypatch.setenv("SEVENSENSE_FALLBACK__STRATEGIES", '["quantized_model","deferred_queue"]')
    s = load_settings("cloud")
    assert (s.queue.backend, s.queue.deferred_queue_url) == ("sqs", url)
    assert s.payload_uri() == "s3://out-bucket/deferred"
    assert s.worker.batch_queue_url == url + "-batch" and s.worker.visibility_timeout_s == 1200
    assert s.fallback.strategies == ["quantized_model", "deferred_queue"]
    monkeypatch.setenv("SEVENSENSE_FALLBACK__STRATEGIES", '["telepathy"]')
    with pytest.raises(ConfigError):
        load_settings("cloud")
