"""The serving autoscaling policies track metrics the code really publishes.

The entry and the model services write their scaling signals as CloudWatch EMF
(serving/telemetry/scaling.py); a target-tracking policy on a metric nobody publishes
never acts, silently. So each customized policy of modules/serving is checked against the
code's constants (namespace, metric name, dimension names) and against the task
definition of the service it scales: publishing enabled, and the ServiceName dimension
value the task writes equal to the one the policy reads (and to the ECS service name).
tfparse evaluates the composed environment roots as in test_wiring.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import tfparse

from sevensense.serving.telemetry import scaling
from sevensense.settings import load_settings

from .conftest import ENVS_DIR

S = "module.platform.module.serving."
# policy -> (the service it scales, the signal it tracks)
POLICIES = {
    "entry_streams": ("entry", scaling.OPEN_STREAMS),
    "model_cpu_queue_wait": ("model_cpu", scaling.BATCH_QUEUE_WAIT_MS),
    "model_gpu_queue_wait": ("model_gpu", scaling.BATCH_QUEUE_WAIT_MS),
    "model_cpu_pending": ("model_cpu", scaling.PENDING_WINDOWS),
    "model_gpu_pending": ("model_gpu", scaling.PENDING_WINDOWS),
}
ROLE_SIGNALS = {
    "entry": scaling.ENTRY_SIGNALS,
    "model_cpu": scaling.MODEL_SIGNALS,
    "model_gpu": scaling.MODEL_SIGNALS,
}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module", params=["dev", "prod"])
def resources(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    data = tfparse.load_from_path(ENVS_DIR / request.param)
    return {
        r["__tfmeta"]["path"].removeprefix(S): r
        for rows in data.values()
        for r in rows
        if isinstance(r, dict) and r.get("__tfmeta", {}).get("path", "").startswith(S)
    }


def task_env(resources: dict[str, dict[str, Any]], service: str) -> dict[str, str]:
    container = json.loads(resources[f"aws_ecs_task_definition.{service}"]["container_definitions"])
    return {e["name"]: e["value"] for e in container[0]["environment"]}


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_policy_tracks_a_metric_the_service_publishes(
    resources: dict[str, dict[str, Any]], policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, signal = POLICIES[policy]
    p = resources[f"aws_appautoscaling_policy.{policy}"]
    assert p["policy_type"] == "TargetTrackingScaling"
    spec = p["target_tracking_scaling_policy_configuration"]["customized_metric_specification"]
    assert spec["namespace"] == scaling.NAMESPACE
    assert spec["metric_name"] == signal.name
    assert signal in ROLE_SIGNALS[service]  # the process that runs there publishes it
    assert spec["statistic"] == "Average"  # per task: the entry is one process per task
    dimensions = {d["name"]: d["value"] for d in as_list(spec["dimensions"])}
    assert tuple(dimensions) == scaling.DIMENSIONS

    # What the task publishes, read through the settings loader the process uses.
    for name, value in task_env(resources, service).items():
        if name.startswith("SEVENSENSE_SERVING__SCALING_METRICS__"):
            monkeypatch.setenv(name, value)
    published = load_settings().serving.scaling_metrics
    assert published.enabled
    assert dimensions[scaling.SERVICE_DIMENSION] == published.service
    assert published.service == resources[f"aws_ecs_service.{service}"]["name"]


def test_every_customized_serving_policy_on_our_namespace_is_checked(
    resources: dict[str, dict[str, Any]],
) -> None:
    ours = {
        path.removeprefix("aws_appautoscaling_policy.")
        for path, r in resources.items()
        if path.startswith("aws_appautoscaling_policy.")
        and json.dumps(r.get("target_tracking_scaling_policy_configuration")).count(
            scaling.NAMESPACE
        )
    }
    assert ours == set(POLICIES)
