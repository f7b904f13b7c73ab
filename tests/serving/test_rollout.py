"""Rollouts: consistent-hash routing, the file store under concurrency, the SSM store on moto."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest

from sevensense.artifacts.registry import sorted_versions
from sevensense.errors import ConfigError, RolloutError
from sevensense.serving.rollout.weights import (
    FileRolloutStore,
    RolloutState,
    SsmRolloutStore,
    choose_version,
    make_store,
    rollouts_from_json,
    rollouts_to_json,
)
from sevensense.settings import ServingSettings
from tests.conftest import REPO

MODEL = "perch-v2"
KEYS = [f"recording-{i}" for i in range(10_000)]


def route(weights: Mapping[str, float], keys: list[str] = KEYS) -> list[str]:
    state = RolloutState(weights=dict(weights))
    return [choose_version(state, k, MODEL) for k in keys]


def shares(versions: list[str]) -> dict[str, float]:
    return {v: n / len(versions) for v, n in Counter(versions).items()}


# --- routing ------------------------------------------------------------------------------


def test_split_matches_the_weights() -> None:
    got = shares(route({"2.0.0": 90, "2.0.1": 10}))
    assert got["2.0.0"] == pytest.approx(0.90, abs=0.02)
    assert got["2.0.1"] == pytest.approx(0.10, abs=0.02)
    assert set(route({"2.0.0": 100})) == {"2.0.0"}
    assert set(route({"2.0.0": 0, "2.0.1": 5})) == {"2.0.1"}  # any scale, zero = no traffic


def test_three_versions_in_pep440_order() -> None:
    assert sorted_versions(["2.0.10", "2.0.9", "2.0.0rc1", "2.0.0", "dev"]) == [
        "dev",
        "2.0.0rc1",
        "2.0.0",
        "2.0.9",
        "2.0.10",
    ]
    weights = {"2.0.10": 10, "1.9.0": 30, "2.0.9": 60}
    got = shares(route(weights))
    for version, weight in weights.items():
        assert got[version] == pytest.approx(weight / 100, abs=0.02)
    # Adjacent versions trade keys only with each other: ramp the newest from the middle one.
    before = route(weights)
    after = route({"2.0.10": 25, "1.9.0": 30, "2.0.9": 45})
    moves = Counter((a, b) for a, b in zip(before, after, strict=True) if a != b)
    assert set(moves) == {("2.0.9", "2.0.10")}
    assert moves["2.0.9", "2.0.10"] / len(KEYS) == pytest.approx(0.15, abs=0.02)


def test_order_of_the_weights_does_not_matter() -> None:
    assert route({"2.0.0": 90, "2.0.1": 10}) == route({"2.0.1": 10, "2.0.0": 90})
    assert route({"2.0.0": 90, "2.0.1": 10}) == route({"2.0.0": 0.9, "2.0.1": 0.1})


def test_shifting_weight_only_moves_keys_from_the_losing_version() -> None:
    before = route({"2.0.0": 90, "2.0.1": 10})
    after = route({"2.0.0": 80, "2.0.1": 20})
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert set(moved) == {("2.0.0", "2.0.1")}
    assert len(moved) / len(KEYS) == pytest.approx(0.10, abs=0.015)
    # and back again: exactly the same keys return
    assert route({"2.0.0": 90, "2.0.1": 10}) == before


def test_routing_is_stable_across_processes() -> None:
    sample = KEYS[:300]
    here = route({"2.0.0": 50, "2.0.1": 50}, sample)
    code = (
        "import json, sys\n"
        "from sevensense.serving.rollout.weights import RolloutState, choose_version\n"
        "state = RolloutState(weights={'2.0.1': 50, '2.0.0': 50})\n"
        f"keys = [f'recording-{{i}}' for i in range({len(sample)})]\n"
        f"print(json.dumps([choose_version(state, k, {MODEL!r}) for k in keys]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout) == here
    # The model name is part of the hash: another model splits keys independently.
    state = RolloutState(weights={"2.0.0": 50, "2.0.1": 50})
    other = [choose_version(state, k, "birdnet") for k in sample]
    assert other != here


@pytest.mark.parametrize(
    "weights",
    [{}, {"2.0.0": -1}, {"2.0.0": 0, "2.0.1": 0}, {"2.0.0": float("nan")}, {"": 100}, {"a": "x"}],
)
def test_invalid_weights(weights: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(RolloutError) as exc:
        RolloutState(weights=weights)
    assert (exc.value.http_status, exc.value.code) == (400, "invalid_rollout")
    with pytest.raises(RolloutError):
        FileRolloutStore(tmp_path / "rollout.json").set_weights(MODEL, weights)
    assert not (tmp_path / "rollout.json").exists()


def test_state_helpers_and_json_round_trip() -> None:
    state = RolloutState(weights={"2.0.0": 3, "2.0.1": 1}, variant="int8", updated_by="ops")
    assert state.shares() == {"2.0.0": 75.0, "2.0.1": 25.0}
    assert state.active is None
    assert RolloutState(weights={"2.0.0": 100, "1.0": 0}).active == "2.0.0"
    rollouts = {MODEL: state, "birdnet-v2.4": RolloutState(weights={"2.4": 100})}
    assert rollouts_from_json(rollouts_to_json(rollouts)) == rollouts
    with pytest.raises(ValueError):
        rollouts_from_json(b'{"perch-v2": {}}')


# --- file store ---------------------------------------------------------------------------


def test_file_store_persists_and_shares_state(tmp_path: Path) -> None:
    path = tmp_path / "state" / "rollout.json"
    store = FileRolloutStore(path)
    assert store.load() == {}  # no file: every model serves its default
    state = store.set_weights(MODEL, {"2.0.0": 90, "2.0.1": 10}, by="alice")
    assert state.updated_by == "alice" and state.variant == "base"
    fresh = FileRolloutStore(path)
    assert fresh.load() == {MODEL: state}
    keys = KEYS[:500]
    assert [choose_version(fresh.load()[MODEL], k, MODEL) for k in keys] == route(
        {"2.0.0": 90, "2.0.1": 10}, keys
    )

    # Unchanged file: the cached states are handed out again, not re-parsed.
    assert fresh.load()[MODEL] is fresh.load()[MODEL]
    store.activate("birdnet-v2.4", "2.4", variant="fp16", by="bob")
    loaded = fresh.load()
    assert set(loaded) == {MODEL, "birdnet-v2.4"}
    assert loaded["birdnet-v2.4"].weights == {"2.4": 100.0}
    assert loaded["birdnet-v2.4"].variant == "fp16"
    assert loaded["birdnet-v2.4"].active == "2.4"
    loaded.clear()  # callers get a copy
    assert len(fresh.load()) == 2
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_file_store_malformed_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "rollout.json"
    path.write_text('{"models": {"perch-v2": {"weights": {}}}}')
    with pytest.raises(ConfigError) as exc:
        FileRolloutStore(path).load()
    assert str(path) in exc.value.message

    path.unlink()
    store = FileRolloutStore(path)
    good = store.set_weights(MODEL, {"2.0.0": 100})
    path.write_text("{truncated")  # a bad hand edit
    with caplog.at_level(logging.ERROR, logger="sevensense.serving.rollout.weights"):
        assert store.load() == {MODEL: good}
    assert "keeping the previous rollouts" in caplog.text
    with pytest.raises(ConfigError, match="not overwriting it"):
        store.set_weights(MODEL, {"2.0.1": 100})


def _write_many(path: str, writer: int, n: int) -> None:
    store = FileRolloutStore(Path(path))
    for i in range(n):
        store.set_weights(f"model-{writer}-{i}", {"1.0": 100 - i, "2.0": i}, by=f"w{writer}")


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "rollout.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(str(path), w, 15)) for w in range(4)]
    threads = [threading.Thread(target=_write_many, args=(str(path), w, 15)) for w in range(4, 8)]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    loaded = FileRolloutStore(path).load()
    assert set(loaded) == {f"model-{w}-{i}" for w in range(8) for i in range(15)}
    assert loaded["model-5-3"].weights == {"1.0": 97.0, "2.0": 3.0}


# --- SSM store ----------------------------------------------------------------------------


@pytest.fixture
def ssm(moto_endpoint: str) -> Any:
    return boto3.client(
        "ssm",
        endpoint_url=moto_endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def param() -> str:
    return f"/sevensense-test-{uuid.uuid4().hex[:12]}/canary"


def put(ssm: Any, name: str, value: dict[str, Any]) -> None:
    ssm.put_parameter(Name=name, Value=json.dumps(value), Type="String", Overwrite=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ssm_reads_the_terraform_format(ssm: Any, param: str) -> None:
    store = SsmRolloutStore(param, client=ssm, poll_s=0.0)
    assert store.load() == {}  # no parameter yet: defaults
    put(ssm, param, {"stable": "perch-v2/2.0.0", "canary": None, "canary_weight": 0})
    state = store.load()[MODEL]
    assert state.weights == {"2.0.0": 100.0} and state.variant == "base"
    assert state.active == "2.0.0"
    put(ssm, param, {"stable": "perch-v2/2.0.0", "canary": "perch-v2/2.0.1", "canary_weight": 0.05})
    state = store.load()[MODEL]
    assert state.weights == {"2.0.0": 95.0, "2.0.1": 5.0}
    got = shares([choose_version(state, k, MODEL) for k in KEYS])
    assert got["2.0.1"] == pytest.approx(0.05, abs=0.02)


def test_ssm_writes_the_terraform_format(ssm: Any, param: str) -> None:
    store = SsmRolloutStore(param, client=ssm, poll_s=0.0)
    store.set_weights(MODEL, {"2.0.0": 90, "2.0.1": 10}, by="alice")
    value = json.loads(ssm.get_parameter(Name=param)["Parameter"]["Value"])
    assert value["stable"] == "perch-v2/2.0.0"
    assert value["canary"] == "perch-v2/2.0.1"
    assert value["canary_weight"] == pytest.approx(0.1)
    assert value["updated_by"] == "alice"
    fresh = SsmRolloutStore(param, client=ssm)
    assert fresh.load()[MODEL].weights == {"2.0.0": 90.0, "2.0.1": 10.0}
    assert fresh.load()[MODEL].updated_by == "alice"

    store.activate(MODEL, "2.0.1", by="alice")  # promote
    value = json.loads(ssm.get_parameter(Name=param)["Parameter"]["Value"])
    assert (value["stable"], value["canary"], value["canary_weight"]) == (
        "perch-v2/2.0.1",
        None,
        0.0,
    )
    # A rollback canary keeps its labels: the old version is the canary now.
    store.set_weights(MODEL, {"2.0.1": 95, "2.0.0": 5}, variant="int8")
    value = json.loads(ssm.get_parameter(Name=param)["Parameter"]["Value"])
    assert (value["stable"], value["canary"], value["variant"]) == (
        "perch-v2/2.0.1",
        "perch-v2/2.0.0",
        "int8",
    )
    assert value["canary_weight"] == pytest.approx(0.05)
    assert SsmRolloutStore(param, client=ssm).load()[MODEL].variant == "int8"


def test_ssm_limits(ssm: Any, param: str) -> None:
    store = SsmRolloutStore(param, client=ssm, poll_s=0.0)
    with pytest.raises(RolloutError, match="at most two live versions"):
        store.set_weights(MODEL, {"1.0": 10, "2.0": 10, "3.0": 80})
    store.activate(MODEL, "2.0.0")
    with pytest.raises(RolloutError, match="holds the rollout of 'perch-v2'"):
        store.activate("birdnet-v2.4", "2.4")
    assert store.load()[MODEL].active == "2.0.0"


def test_ssm_polls_at_most_every_poll_s(ssm: Any, param: str) -> None:
    clock = FakeClock()
    store = SsmRolloutStore(param, client=ssm, poll_s=1.0, clock=clock)
    put(ssm, param, {"stable": "perch-v2/2.0.0", "canary": None, "canary_weight": 0})
    assert store.load()[MODEL].active == "2.0.0"
    put(ssm, param, {"stable": "perch-v2/2.0.0", "canary": "perch-v2/2.0.1", "canary_weight": 0.2})
    clock.now += 0.5
    assert store.load()[MODEL].active == "2.0.0"  # cached
    clock.now += 0.6
    assert store.load()[MODEL].weights == {"2.0.0": 80.0, "2.0.1": 20.0}


@pytest.mark.parametrize(
    "value",
    [
        "not json",
        json.dumps({"canary": None}),
        json.dumps({"stable": "2.0.0", "canary": None, "canary_weight": 0}),
        json.dumps({"stable": "perch-v2/2.0.0", "canary": "other/1.0", "canary_weight": 0.1}),
        json.dumps({"stable": "perch-v2/2.0.0", "canary": "perch-v2/2.0.1", "canary_weight": 2}),
    ],
)
def test_ssm_malformed_parameter(ssm: Any, param: str, value: str) -> None:
    ssm.put_parameter(Name=param, Value=value, Type="String", Overwrite=True)
    with pytest.raises(ConfigError):
        SsmRolloutStore(param, client=ssm).load()


def test_ssm_keeps_the_last_good_value(
    ssm: Any, param: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    store = SsmRolloutStore(param, client=ssm, poll_s=1.0, clock=clock)
    store.set_weights(MODEL, {"2.0.0": 90, "2.0.1": 10})
    ssm.put_parameter(Name=param, Value="{oops", Type="String", Overwrite=True)
    clock.now += 5
    with caplog.at_level(logging.ERROR, logger="sevensense.serving.rollout.weights"):
        assert store.load()[MODEL].weights == {"2.0.0": 90.0, "2.0.1": 10.0}
    assert "keeping the previous rollouts" in caplog.text


def test_make_store(tmp_path: Path) -> None:
    file_store = make_store(ServingSettings(state_dir=tmp_path))
    assert isinstance(file_store, FileRolloutStore)
    assert file_store.path == tmp_path / "rollout.json"
    with pytest.raises(ConfigError, match="canary_param"):
        make_store(ServingSettings(rollout_store="ssm"))
    ssm_store = make_store(
        ServingSettings(rollout_store="ssm", canary_param="/x/canary", rollout_poll_s=60)
    )
    assert isinstance(ssm_store, SsmRolloutStore)
    assert (ssm_store.parameter_name, ssm_store.poll_s) == ("/x/canary", 60)
