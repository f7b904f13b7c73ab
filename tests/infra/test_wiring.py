"""Structural tests of the wiring between the pieces, on the fully composed roots.

tfparse evaluates each environment root (envs/dev, envs/prod) with its modules the way
Terraform would, without a provider: literal values are computed, and a reference to a
value only known after apply (an ARN, a queue URL) is replaced by the id of the
resource it comes from. Resolving those ids back to resource addresses lets us assert
the wires themselves: which queue the bucket notifies, which DLQ a queue redrives to,
which principal a queue policy admits, which exact resources each role reaches.

A fixed bucket_name_suffix makes bucket names (and so their ARNs) known without an
account ID.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
import tfparse

from .conftest import ENVS_DIR

SUFFIX = "structtest"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
P = "module.platform."
SQ = "module.storage_queues."
ENVS = ["dev", "prod"]


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@dataclass
class Parsed:
    env: str
    data: dict[str, list[dict[str, Any]]]
    ids: dict[str, str]

    def bucket(self, purpose: str) -> str:
        return f"sevensense-{self.env}-{purpose}-{SUFFIX}"

    def bucket_refs(self, purpose: str, module: str) -> tuple[str, str]:
        """A bucket is referenced by its (known) name or by its s3-bucket module."""
        return (self.bucket(purpose), SQ + f"module.{module}")

    def resolve(self, value: Any) -> Any:
        """Replace resource ids by addresses relative to module.platform."""
        if isinstance(value, str):
            m = UUID.match(value)
            if m and m.group(0) in self.ids:
                return self.ids[m.group(0)].removeprefix(P) + value[m.end() :]
            return value
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items() if k not in ("__tfmeta", "id")}
        return value

    def one(self, rtype: str, path: str) -> dict[str, Any]:
        matches = [r for r in self.data.get(rtype, []) if r["__tfmeta"]["path"] == P + path]
        assert len(matches) == 1, f"{rtype} {path}: {len(matches)} matches"
        return matches[0]

    def all(self, rtype: str) -> Iterable[tuple[str, dict[str, Any]]]:
        for r in self.data.get(rtype, []):
            yield r["__tfmeta"]["path"].removeprefix(P), r


@pytest.fixture(scope="module", params=ENVS)
def parsed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Parsed:
    env = request.param
    root = ENVS_DIR / env
    tfvars = tmp_path_factory.mktemp(f"wiring-{env}") / "wiring.tfvars"
    tfvars.write_text(
        'image_tag          = "v0.1.0"\n'
        'certificate_arn    = "arn:aws:acm:eu-west-1:111122223333:certificate/abc"\n'
        f'bucket_name_suffix = "{SUFFIX}"\n'
    )
    # tfparse resolves var files relative to the module directory.
    data = tfparse.load_from_path(root, vars_paths=[os.path.relpath(tfvars, root)])
    ids = {
        r["id"]: r["__tfmeta"]["path"]
        for rows in data.values()
        for r in rows
        if isinstance(r, dict) and "id" in r and "__tfmeta" in r and "path" in r["__tfmeta"]
    }
    return Parsed(env=env, data=data, ids=ids)


# --------------------------------------------------------------------------------------
# S3 -> SQS
# --------------------------------------------------------------------------------------
def test_input_bucket_notifies_batch_queue(parsed: Parsed) -> None:
    notes = list(parsed.all("aws_s3_bucket_notification"))
    assert len(notes) == 1, "exactly one bucket notification in the platform"
    _path, note = notes[0]
    assert parsed.resolve(note["bucket"]) in parsed.bucket_refs("batch-in", "batch_input")
    queues = as_list(note["queue"])
    assert {q["filter_suffix"] for q in queues} == {".wav", ".flac", ".mp3", ".ogg", ".opus"}
    for q in queues:
        assert parsed.resolve(q["queue_arn"]) == SQ + "aws_sqs_queue.batch"
        assert q["events"] == ["s3:ObjectCreated:*"]
        assert q["filter_prefix"] == "incoming/"
    assert not note.get("topic") and not note.get("lambda_function")


# --------------------------------------------------------------------------------------
# Queues, DLQs, redrive
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("queue", "dlq", "receives"), [("batch", "batch_dlq", 3), ("deferred", "deferred_dlq", 5)]
)
def test_each_queue_has_dlq_with_intended_receive_count(
    parsed: Parsed, queue: str, dlq: str, receives: int
) -> None:
    q = parsed.one("aws_sqs_queue", SQ + f"aws_sqs_queue.{queue}")
    redrive = json.loads(q["redrive_policy"])
    assert parsed.resolve(redrive["deadLetterTargetArn"]) == SQ + f"aws_sqs_queue.{dlq}"
    assert redrive["maxReceiveCount"] == receives
    assert parsed.resolve(q["kms_master_key_id"]) == "module.kms.aws_kms_key.this"
    d = parsed.one("aws_sqs_queue", SQ + f"aws_sqs_queue.{dlq}")
    assert "redrive_policy" not in d or d["redrive_policy"] in (None, "")
    assert d["message_retention_seconds"] == 1209600
    assert parsed.resolve(d["kms_master_key_id"]) == "module.kms.aws_kms_key.this"
    allow = parsed.one(
        "aws_sqs_queue_redrive_allow_policy", SQ + f"aws_sqs_queue_redrive_allow_policy.{dlq}[0]"
    )
    assert parsed.resolve(allow["queue_url"]) == SQ + f"aws_sqs_queue.{dlq}"
    allowed = json.loads(allow["redrive_allow_policy"])
    assert allowed["redrivePermission"] == "byQueue"
    assert parsed.resolve(allowed["sourceQueueArns"]) == [SQ + f"aws_sqs_queue.{queue}"]


def test_batch_visibility_timeout_covers_long_recordings(parsed: Parsed) -> None:
    q = parsed.one("aws_sqs_queue", SQ + "aws_sqs_queue.batch")
    assert q["visibility_timeout_seconds"] >= 3600
    assert q["receive_wait_time_seconds"] == 20


def _statements(parsed: Parsed, doc_path: str) -> list[dict[str, Any]]:
    doc = parsed.one("aws_iam_policy_document", doc_path)
    return [parsed.resolve(s) for s in as_list(doc.get("statement"))]


@pytest.mark.parametrize("queue", ["batch", "batch_dlq", "deferred", "deferred_dlq"])
def test_queue_policies_admit_only_the_input_bucket(parsed: Parsed, queue: str) -> None:
    qp = parsed.one("aws_sqs_queue_policy", SQ + f'aws_sqs_queue_policy.this["{queue}"]')
    assert parsed.resolve(qp["queue_url"]) == SQ + f"aws_sqs_queue.{queue}"
    doc_path = SQ + f'data.aws_iam_policy_document.queue["{queue}"]'
    assert parsed.resolve(qp["policy"]) == doc_path
    statements = _statements(parsed, doc_path)

    denies = [s for s in statements if s.get("effect") == "Deny"]
    assert len(denies) == 1
    cond = as_list(denies[0]["condition"])
    assert cond == [{"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}]

    allows = [s for s in statements if s.get("effect", "Allow") == "Allow"]
    if queue != "batch":
        assert allows == [], f"{queue} must not admit any principal by policy"
        return
    assert len(allows) == 1
    allow = allows[0]
    assert as_list(allow["principals"]) == [
        {"type": "Service", "identifiers": ["s3.amazonaws.com"]}
    ]
    assert allow["actions"] == ["sqs:SendMessage"]
    assert allow["resources"] == [SQ + "aws_sqs_queue.batch"]
    conditions = {(c["test"], c["variable"]): c["values"] for c in as_list(allow["condition"])}
    assert conditions[("ArnEquals", "aws:SourceArn")] == [
        f"arn:aws:s3:::{parsed.bucket('batch-in')}"
    ]
    assert ("StringEquals", "aws:SourceAccount") in conditions
    assert len(conditions) == 2


# --------------------------------------------------------------------------------------
# IAM: each role reaches exactly its resources
# --------------------------------------------------------------------------------------
KMS = "module.kms.aws_kms_key.this"
CANARY = "module.config.aws_ssm_parameter.canary"
REGISTRY = "module.config.aws_ssm_parameter.model_registry_uri"
SECRET = "module.config.aws_secretsmanager_secret.api_keys"
BATCH_Q = SQ + "aws_sqs_queue.batch"
DEFERRED_Q = SQ + "aws_sqs_queue.deferred"
BATCH_DLQ = SQ + "aws_sqs_queue.batch_dlq"
DEFERRED_DLQ = SQ + "aws_sqs_queue.deferred_dlq"
INDEX_DB = "module.index_db[0]."
INDEX_SECRET = INDEX_DB + "aws_secretsmanager_secret.app"  # the app role's: the tasks read it
MASTER_SECRET = INDEX_DB + "aws_secretsmanager_secret.credentials"  # the migration's only
MIGRATE_TASK = "module.worker.aws_ecs_task_definition.index_migrate[0]"
PAYLOAD_PREFIX = "deferred/"
S3_WRITES = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:RestoreObject"}


def expected_grants(parsed: Parsed) -> dict[str, set[tuple[str, str]]]:
    models = f"arn:aws:s3:::{parsed.bucket('models')}"
    model_grants = {
        ("s3:GetObject", f"{models}/models/*"),
        ("s3:ListBucket", models),
        ("ssm:GetParameter", REGISTRY),
        ("ssm:GetParameter", CANARY),
        ("kms:Decrypt", KMS),
    }
    logs = {
        f'module.observability.aws_cloudwatch_log_group.service["{svc}"]:log-stream:*'
        for svc in ("entry", "model-gpu", "model-cpu", "worker")
    }
    output = f"arn:aws:s3:::{parsed.bucket('batch-out')}"
    payload_objects = f"{output}/{PAYLOAD_PREFIX}*"
    return {
        "execution": {
            ("ecr:GetAuthorizationToken", "*"),
            *{
                (a, "module.registry.aws_ecr_repository.this")
                for a in (
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                )
            },
            ("kms:Decrypt", KMS),
            *{(a, lg) for a in ("logs:CreateLogStream", "logs:PutLogEvents") for lg in logs},
        },
        "entry": {
            ("sqs:SendMessage", DEFERRED_Q),
            ("sqs:GetQueueAttributes", DEFERRED_Q),
            ("sqs:GetQueueUrl", DEFERRED_Q),
            ("s3:PutObject", payload_objects),
            ("s3:GetObject", payload_objects),
            ("s3:ListBucket", output),  # only under deferred/ (condition, tested below)
            ("secretsmanager:GetSecretValue", SECRET),
            ("secretsmanager:GetSecretValue", INDEX_SECRET),
            ("ssm:GetParameter", CANARY),
            ("kms:Decrypt", KMS),
            ("kms:GenerateDataKey", KMS),
        },
        "model_gpu": model_grants,
        "model_cpu": model_grants,
        "worker": {
            *{
                (a, q)
                for a in (
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                )
                for q in (BATCH_Q, DEFERRED_Q)
            },
            *{
                (a, q)
                for a in ("sqs:SendMessage", "sqs:GetQueueUrl")
                for q in (BATCH_DLQ, DEFERRED_DLQ)
            },
            ("s3:GetObject", f"arn:aws:s3:::{parsed.bucket('batch-in')}/incoming/*"),
            ("s3:PutObject", f"{output}/*"),
            ("s3:GetObject", f"{output}/*"),  # HEAD of the result key (skip done work)
            ("s3:ListBucket", output),  # 404, not 403, for keys not written yet
            *{(a, payload_objects) for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")},
            *model_grants,
            ("kms:GenerateDataKey", KMS),
            ("secretsmanager:GetSecretValue", INDEX_SECRET),
        },
        "index_migrate[0]": {
            ("secretsmanager:GetSecretValue", MASTER_SECRET),
            ("secretsmanager:GetSecretValue", INDEX_SECRET),
            ("kms:Decrypt", KMS),
        },
    }


def role_grants(parsed: Parsed, role: str) -> set[tuple[str, str]]:
    grants: set[tuple[str, str]] = set()
    role_addr = f"module.iam.aws_iam_role.{role}"
    policies = [
        rp for _, rp in parsed.all("aws_iam_role_policy") if parsed.resolve(rp["role"]) == role_addr
    ]
    assert policies, f"{role} has no inline policy"
    attachments = [
        a
        for _, a in parsed.all("aws_iam_role_policy_attachment")
        if parsed.resolve(a["role"]) in (role_addr, f"{parsed.env}-{role}")
    ]
    assert not attachments, f"{role} must not carry managed policies"
    for rp in policies:
        for st in _statements(parsed, parsed.resolve(rp["policy"])):
            assert st.get("effect", "Allow") == "Allow"
            for action in st["actions"]:
                for resource in st["resources"]:
                    grants.add((action, resource))
    return grants


@pytest.mark.parametrize(
    "role", ["execution", "entry", "model_gpu", "model_cpu", "worker", "index_migrate[0]"]
)
def test_each_role_reaches_exactly_its_resources(parsed: Parsed, role: str) -> None:
    assert role_grants(parsed, role) == expected_grants(parsed)[role]


def test_no_wildcards_except_documented(parsed: Parsed) -> None:
    for path, doc in parsed.all("aws_iam_policy_document"):
        if not path.startswith("module.iam.") and not path.startswith("module.network."):
            continue
        for st in as_list(doc.get("statement")):
            if path.endswith("_assume"):
                continue
            for action in st["actions"]:
                assert "*" not in action, f"{path}: wildcard action {action}"
            if "*" in st["resources"]:
                assert st["actions"] == ["ecr:GetAuthorizationToken"], f"{path}: Resource *"


@pytest.mark.parametrize(
    ("taskdef", "role"),
    [
        ("module.serving.aws_ecs_task_definition.entry", "entry"),
        ("module.serving.aws_ecs_task_definition.model_gpu", "model_gpu"),
        ("module.serving.aws_ecs_task_definition.model_cpu", "model_cpu"),
        ("module.worker.aws_ecs_task_definition.worker", "worker"),
        (MIGRATE_TASK, "index_migrate[0]"),
    ],
)
def test_each_service_runs_with_its_own_task_role(parsed: Parsed, taskdef: str, role: str) -> None:
    td = parsed.one("aws_ecs_task_definition", taskdef)
    assert parsed.resolve(td["task_role_arn"]) == f"module.iam.aws_iam_role.{role}"
    assert parsed.resolve(td["execution_role_arn"]) == "module.iam.aws_iam_role.execution"


# --------------------------------------------------------------------------------------
# Entry -> model services -> deferred queue
# --------------------------------------------------------------------------------------
def _container(parsed: Parsed, taskdef: str) -> dict[str, Any]:
    td = parsed.one("aws_ecs_task_definition", taskdef)
    (container,) = json.loads(td["container_definitions"])
    return container


def test_entry_reaches_models_via_service_connect_and_defers_to_queue(parsed: Parsed) -> None:
    entry = _container(parsed, "module.serving.aws_ecs_task_definition.entry")
    env = {e["name"]: parsed.resolve(e["value"]) for e in entry["environment"]}
    assert env["SEVENSENSE_PROFILE"] == "cloud"
    assert env["SEVENSENSE_DEFERRED_QUEUE_URL"] == DEFERRED_Q
    assert env["SEVENSENSE_API_KEYS_SECRET_ARN"] == SECRET
    chain = json.loads(env["SEVENSENSE_FALLBACK__STRATEGIES"])
    assert chain[-1] == "deferred_queue" and "zero_vector" not in chain
    assert entry["command"][:2] == ["bentoml", "serve"]

    aliases = {}
    for svc in ("model_gpu", "model_cpu"):
        s = parsed.one("aws_ecs_service", f"module.serving.aws_ecs_service.{svc}")
        sc = as_list(s["service_connect_configuration"])[0]
        assert sc["enabled"] is True
        service = as_list(sc["service"])[0]
        alias = as_list(service["client_alias"])[0]
        aliases[svc] = f"http://{alias['dns_name']}:{alias['port']}"
    assert env["SEVENSENSE_GPU_URL"] == aliases["model_gpu"]
    assert env["SEVENSENSE_CPU_URL"] == aliases["model_cpu"]

    entry_svc = parsed.one("aws_ecs_service", "module.serving.aws_ecs_service.entry")
    assert as_list(entry_svc["service_connect_configuration"])[0]["enabled"] is True


# --------------------------------------------------------------------------------------
# Deferred requests: payload store (S3) and dead-lettering by the worker
# --------------------------------------------------------------------------------------
UUID_ANYWHERE = re.compile(UUID.pattern.removeprefix("^"))


def _resolve_inside(parsed: Parsed, value: str) -> str:
    """Resolve resource ids anywhere in an interpolated string (e.g. s3://<id>/deferred)."""
    return UUID_ANYWHERE.sub(
        lambda m: parsed.ids.get(m.group(0), m.group(0)).removeprefix(P), value
    )


def _payload_store_env(parsed: Parsed, taskdef: str) -> str:
    container = _container(parsed, taskdef)
    env = {e["name"]: e["value"] for e in container["environment"]}
    return _resolve_inside(parsed, env["SEVENSENSE_PAYLOAD_STORE"])


@pytest.mark.parametrize(
    "taskdef",
    [
        "module.serving.aws_ecs_task_definition.entry",
        "module.worker.aws_ecs_task_definition.worker",
    ],
)
def test_payload_store_is_the_output_bucket_deferred_prefix(parsed: Parsed, taskdef: str) -> None:
    uri = _payload_store_env(parsed, taskdef)
    expected = {
        f"s3://{b}/{PAYLOAD_PREFIX.rstrip('/')}"
        for b in parsed.bucket_refs("batch-out", "batch_output")
    }
    assert uri in expected, uri


def test_entry_and_worker_share_one_payload_store(parsed: Parsed) -> None:
    assert _payload_store_env(
        parsed, "module.serving.aws_ecs_task_definition.entry"
    ) == _payload_store_env(parsed, "module.worker.aws_ecs_task_definition.worker")


@pytest.mark.parametrize(
    "taskdef",
    [
        "module.serving.aws_ecs_task_definition.model_gpu",
        "module.serving.aws_ecs_task_definition.model_cpu",
    ],
)
def test_model_services_have_no_payload_store(parsed: Parsed, taskdef: str) -> None:
    env = {e["name"] for e in _container(parsed, taskdef)["environment"]}
    assert "SEVENSENSE_PAYLOAD_STORE" not in env


def test_entry_writes_only_the_payload_store(parsed: Parsed) -> None:
    grants = role_grants(parsed, "entry")
    writes = {(a, r) for a, r in grants if a in S3_WRITES}
    payload_objects = f"arn:aws:s3:::{parsed.bucket('batch-out')}/{PAYLOAD_PREFIX}*"
    assert writes == {("s3:PutObject", payload_objects)}
    objects = {(a, r) for a, r in grants if a.startswith("s3:") and a != "s3:ListBucket"}
    assert objects == {("s3:PutObject", payload_objects), ("s3:GetObject", payload_objects)}


def test_entry_lists_only_the_payload_store(parsed: Parsed) -> None:
    """ListBucket turns GET /jobs/{unknown id} into NoSuchKey (404) instead of 403; the
    s3:prefix condition keeps it to deferred/."""
    policies = [
        rp
        for _, rp in parsed.all("aws_iam_role_policy")
        if parsed.resolve(rp["role"]) == "module.iam.aws_iam_role.entry"
    ]
    lists = [
        st
        for rp in policies
        for st in _statements(parsed, parsed.resolve(rp["policy"]))
        if "s3:ListBucket" in st["actions"]
    ]
    assert len(lists) == 1
    (st,) = lists
    assert st["actions"] == ["s3:ListBucket"]
    assert st["resources"] == [f"arn:aws:s3:::{parsed.bucket('batch-out')}"]
    assert as_list(st["condition"]) == [
        {"test": "StringLike", "variable": "s3:prefix", "values": [f"{PAYLOAD_PREFIX}*"]}
    ]


def test_worker_reads_updates_and_deletes_payloads(parsed: Parsed) -> None:
    grants = role_grants(parsed, "worker")
    payload_objects = f"arn:aws:s3:::{parsed.bucket('batch-out')}/{PAYLOAD_PREFIX}*"
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert (action, payload_objects) in grants
    deletes = {r for a, r in grants if a == "s3:DeleteObject"}
    assert deletes == {payload_objects}, "the worker deletes nothing outside the payload store"


def test_worker_dead_letters_to_both_dlqs(parsed: Parsed) -> None:
    grants = role_grants(parsed, "worker")
    for dlq in (BATCH_DLQ, DEFERRED_DLQ):
        assert ("sqs:SendMessage", dlq) in grants
        assert ("sqs:GetQueueUrl", dlq) in grants
        # It only sends there (no receive/delete on a DLQ: redriving stays an operator task).
        assert {a for a, r in grants if r == dlq} == {"sqs:SendMessage", "sqs:GetQueueUrl"}
    # The DLQs are the ones the source queues redrive to, so the app finds them via the
    # RedrivePolicy (GetQueueAttributes on the source queues).
    for queue, dlq in ((BATCH_Q, BATCH_DLQ), (DEFERRED_Q, DEFERRED_DLQ)):
        q = parsed.one("aws_sqs_queue", queue)
        assert parsed.resolve(json.loads(q["redrive_policy"])["deadLetterTargetArn"]) == dlq
        assert ("sqs:GetQueueAttributes", queue) in grants


def test_entry_reads_the_deferred_queue_redrive_policy(parsed: Parsed) -> None:
    grants = role_grants(parsed, "entry")
    assert {a for a, r in grants if r == DEFERRED_Q} == {
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }
    assert not any(r in (BATCH_Q, BATCH_DLQ, DEFERRED_DLQ) for _, r in grants)


def test_payload_store_expires(parsed: Parsed) -> None:
    (lc,) = [
        r
        for _, r in parsed.all("aws_s3_bucket_lifecycle_configuration")
        if parsed.resolve(r["bucket"]) in parsed.bucket_refs("batch-out", "batch_output")
    ]
    rules = as_list(lc["rule"])
    deferred = [r for r in rules if as_list(r.get("filter"))[0].get("prefix") == PAYLOAD_PREFIX]
    assert len(deferred) == 1, "one lifecycle rule for the payload store"
    (rule,) = deferred
    assert rule["status"] == "Enabled"
    assert as_list(rule["expiration"])[0]["days"] == 7
    assert as_list(rule["noncurrent_version_expiration"])[0]["noncurrent_days"] == 1
    # The bucket-wide retention rule is still there (batch results); tfparse does not
    # render its dynamic expiration block, the module's terraform test checks the days.
    (whole,) = [r for r in rules if not as_list(r.get("filter"))[0].get("prefix")]
    assert whole["status"] == "Enabled"


def test_gpu_service_runs_on_gpu_capacity_with_one_gpu_per_task(parsed: Parsed) -> None:
    gpu = _container(parsed, "module.serving.aws_ecs_task_definition.model_gpu")
    assert gpu["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    svc = parsed.one("aws_ecs_service", "module.serving.aws_ecs_service.model_gpu")
    (strategy,) = as_list(svc["capacity_provider_strategy"])
    assert parsed.resolve(strategy["capacity_provider"]) in (
        "module.cluster.aws_ecs_capacity_provider.gpu",
        f"sevensense-{parsed.env}-gpu",
    )
    cpu_svc = parsed.one("aws_ecs_service", "module.serving.aws_ecs_service.model_cpu")
    assert [s["capacity_provider"] for s in as_list(cpu_svc["capacity_provider_strategy"])] == [
        "FARGATE"
    ]


def test_worker_consumes_both_queues(parsed: Parsed) -> None:
    worker = _container(parsed, "module.worker.aws_ecs_task_definition.worker")
    env = {e["name"]: parsed.resolve(e["value"]) for e in worker["environment"]}
    assert worker["command"][:2] == ["sevensense", "worker"]
    assert env["SEVENSENSE_BATCH_QUEUE_URL"] == BATCH_Q
    assert env["SEVENSENSE_DEFERRED_QUEUE_URL"] == DEFERRED_Q
    assert env["SEVENSENSE_INPUT_BUCKET"] in parsed.bucket_refs("batch-in", "batch_input")
    assert env["SEVENSENSE_OUTPUT_BUCKET"] in parsed.bucket_refs("batch-out", "batch_output")


def test_every_bucket_is_private_encrypted_logged(parsed: Parsed) -> None:
    buckets = {r["bucket"] for _, r in parsed.all("aws_s3_bucket")}
    expected = {parsed.bucket(p) for p in ("access-logs", "models", "batch-in", "batch-out")}
    assert buckets == expected
    pabs = {
        parsed.resolve(r["bucket"]): r for _, r in parsed.all("aws_s3_bucket_public_access_block")
    }
    assert len(pabs) == 4
    for r in pabs.values():
        assert all(
            r[k] is True
            for k in (
                "block_public_acls",
                "block_public_policy",
                "ignore_public_acls",
                "restrict_public_buckets",
            )
        )
    logged = list(parsed.all("aws_s3_bucket_logging"))
    assert len(logged) == 3
    for _, r in logged:
        assert parsed.resolve(r["target_bucket"]) == parsed.bucket("access-logs")
    kms = [
        r
        for _, r in parsed.all("aws_s3_bucket_server_side_encryption_configuration")
        if as_list(as_list(r["rule"])[0]["apply_server_side_encryption_by_default"])[0][
            "sse_algorithm"
        ]
        == "aws:kms"
    ]
    assert len(kms) == 3  # the access-log bucket must use SSE-S3 (S3/ALB log delivery)


# --------------------------------------------------------------------------------------
# Index database (pgvector on Aurora PostgreSQL Serverless v2)
# --------------------------------------------------------------------------------------
INDEX_SG = INDEX_DB + "aws_security_group.db"
CLIENT_SGS = {
    "module.serving.aws_security_group.entry",
    "module.worker.aws_security_group.worker",
}


def test_index_db_is_serverless_v2_in_the_private_subnets(parsed: Parsed) -> None:
    cluster = parsed.one("aws_rds_cluster", INDEX_DB + "aws_rds_cluster.this")
    assert cluster["engine"] == "aurora-postgresql" and cluster["engine_mode"] == "provisioned"
    major, minor = (int(x) for x in cluster["engine_version"].split("."))
    assert (major, minor) >= (16, 8), "pgvector 0.8 needs Aurora PostgreSQL 16.8+"
    (writer,) = [r for _, r in parsed.all("aws_rds_cluster_instance")]
    assert writer["instance_class"] == "db.serverless"
    assert writer["publicly_accessible"] is False
    assert parsed.resolve(writer["cluster_identifier"]) == INDEX_DB + "aws_rds_cluster.this"
    scaling = as_list(cluster["serverlessv2_scaling_configuration"])[0]
    max_acu = {"dev": 2, "prod": 16}[parsed.env]
    assert (scaling["min_capacity"], scaling["max_capacity"]) == (0.5, max_acu)
    assert scaling.get("seconds_until_auto_pause") is None, "no auto-pause above 0 ACU"
    group = parsed.one("aws_db_subnet_group", INDEX_DB + "aws_db_subnet_group.this")
    assert cluster["db_subnet_group_name"] == group["name"]
    subnets = parsed.resolve(group["subnet_ids"])
    azs = {"dev": 2, "prod": 3}[parsed.env]
    assert subnets == [f"module.network.aws_subnet.private[{i}]" for i in range(azs)]


def test_index_db_admits_only_the_entry_and_worker_tasks(parsed: Parsed) -> None:
    cluster = parsed.one("aws_rds_cluster", INDEX_DB + "aws_rds_cluster.this")
    assert parsed.resolve(cluster["vpc_security_group_ids"]) == [INDEX_SG]
    ingress = [
        r
        for _, r in parsed.all("aws_vpc_security_group_ingress_rule")
        if parsed.resolve(r["security_group_id"]) == INDEX_SG
    ]
    assert {parsed.resolve(r.get("referenced_security_group_id")) for r in ingress} == CLIENT_SGS
    assert len(ingress) == 2
    for r in ingress:
        assert (r["ip_protocol"], r["from_port"], r["to_port"]) == ("tcp", 5432, 5432)
        assert not r.get("cidr_ipv4") and not r.get("cidr_ipv6") and not r.get("prefix_list_id")
    egress = [r for _, r in parsed.all("aws_vpc_security_group_egress_rule")]
    assert not [r for r in egress if parsed.resolve(r["security_group_id"]) == INDEX_SG]
    to_db = {
        parsed.resolve(r["security_group_id"])
        for r in egress
        if parsed.resolve(r.get("referenced_security_group_id")) == INDEX_SG
    }
    assert to_db == CLIENT_SGS, "only the entry and worker groups open egress to the database"
    assert not list(parsed.all("aws_security_group_rule"))


def test_index_db_is_encrypted_with_the_platform_key_and_kept(parsed: Parsed) -> None:
    cluster = parsed.one("aws_rds_cluster", INDEX_DB + "aws_rds_cluster.this")
    assert cluster["storage_encrypted"] is True
    assert parsed.resolve(cluster["kms_key_id"]) == KMS
    writer = parsed.one("aws_rds_cluster_instance", INDEX_DB + "aws_rds_cluster_instance.writer")
    assert writer["performance_insights_enabled"] is True
    assert parsed.resolve(writer["performance_insights_kms_key_id"]) == KMS
    secret = parsed.one("aws_secretsmanager_secret", INDEX_SECRET)
    assert parsed.resolve(secret["kms_key_id"]) == KMS
    logs = parsed.one("aws_cloudwatch_log_group", INDEX_DB + "aws_cloudwatch_log_group.postgresql")
    assert parsed.resolve(logs["kms_key_id"]) == KMS
    assert logs["name"] == f"/aws/rds/cluster/{cluster['cluster_identifier']}/postgresql"
    assert cluster["iam_database_authentication_enabled"] is True
    assert cluster["enabled_cloudwatch_logs_exports"] == ["postgresql"]
    assert cluster["backup_retention_period"] >= 7
    prod = parsed.env == "prod"
    assert cluster["deletion_protection"] is prod
    assert cluster["skip_final_snapshot"] is not prod


def test_index_db_password_only_in_write_only_arguments(parsed: Parsed) -> None:
    cluster = parsed.one("aws_rds_cluster", INDEX_DB + "aws_rds_cluster.this")
    assert "master_password" not in cluster and cluster["master_password_wo_version"] >= 1
    version = parsed.one(
        "aws_secretsmanager_secret_version",
        INDEX_DB + "aws_secretsmanager_secret_version.credentials",
    )
    assert parsed.resolve(version["secret_id"]) == MASTER_SECRET
    assert "secret_string" not in version
    assert version["secret_string_wo_version"] == cluster["master_password_wo_version"]


@pytest.mark.parametrize(
    ("taskdef", "has_db"),
    [
        ("module.serving.aws_ecs_task_definition.entry", True),
        ("module.worker.aws_ecs_task_definition.worker", True),
        ("module.serving.aws_ecs_task_definition.model_gpu", False),
        ("module.serving.aws_ecs_task_definition.model_cpu", False),
    ],
)
def test_index_db_secret_reaches_entry_and_worker_only(
    parsed: Parsed, taskdef: str, has_db: bool
) -> None:
    env = {
        e["name"]: parsed.resolve(e["value"]) for e in _container(parsed, taskdef)["environment"]
    }
    index_env = {k: v for k, v in env.items() if k.startswith("SEVENSENSE_INDEX")}
    if has_db:
        assert index_env == {
            "SEVENSENSE_INDEX_DB_SECRET_ARN": INDEX_SECRET,
            "SEVENSENSE_INDEX__BACKEND": "pgvector",
        }
    else:
        assert index_env == {}


@pytest.mark.parametrize(
    "role", ["execution", "entry", "model_gpu", "model_cpu", "worker", "index_migrate[0]"]
)
def test_index_db_secret_is_readable_by_entry_and_worker_only(parsed: Parsed, role: str) -> None:
    readers = {r for a, r in role_grants(parsed, role) if r in (INDEX_SECRET, MASTER_SECRET)}
    if role in ("entry", "worker"):
        assert readers == {INDEX_SECRET}, "the tasks read the app role's secret, not the master's"
    elif role == "index_migrate[0]":
        assert readers == {INDEX_SECRET, MASTER_SECRET}
    else:
        assert readers == set()


def test_app_secret_is_its_own_login_and_the_master_goes_only_to_the_migration(
    parsed: Parsed,
) -> None:
    app = parsed.one("aws_secretsmanager_secret", INDEX_SECRET)
    assert parsed.resolve(app["kms_key_id"]) == KMS
    version = parsed.one(
        "aws_secretsmanager_secret_version", INDEX_DB + "aws_secretsmanager_secret_version.app"
    )
    assert parsed.resolve(version["secret_id"]) == INDEX_SECRET
    assert "secret_string" not in version and version["secret_string_wo_version"] >= 1
    # every task definition but the migration's names the app secret, never the master's
    for address, td in parsed.all("aws_ecs_task_definition"):
        (container,) = json.loads(td["container_definitions"])
        env = {e["name"]: parsed.resolve(e["value"]) for e in container["environment"]}
        refs = {v for v in env.values() if v in (INDEX_SECRET, MASTER_SECRET)}
        refs |= {parsed.resolve(c) for c in container.get("command", [])} & {
            INDEX_SECRET,
            MASTER_SECRET,
        }
        if address == MIGRATE_TASK:
            assert env["SEVENSENSE_INDEX_DB_SECRET_ARN"] == MASTER_SECRET
            assert container["command"][:4] == ["sevensense", "index", "migrate", "--app-secret"]
            assert parsed.resolve(container["command"][4]) == INDEX_SECRET
        else:
            assert MASTER_SECRET not in refs, f"{address} gets the master secret"
