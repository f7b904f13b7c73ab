# Least-privilege roles. Every statement names exact ARNs (bucket/prefix, queue, secret,
# parameter, key, log group, repository); the only Resource "*" is
# ecr:GetAuthorizationToken, which AWS does not scope to resources. A "*" at the end of
# an object ARN means the keys under that prefix and is commented where it is used.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition

  # Object ARNs: the trailing "*" is every key under that prefix, nothing outside it.
  model_objects   = "${var.model_artifacts_bucket_arn}/${var.model_artifacts_prefix}*"
  input_objects   = "${var.batch_input_bucket_arn}/${var.batch_input_prefix}*"
  payload_objects = "${var.batch_output_bucket_arn}/${var.deferred_payload_prefix}*"
}

# --------------------------------------------------------------------------------------
# Trust policies
# --------------------------------------------------------------------------------------
data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    # Confused-deputy protection: only ECS acting for this account.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"] # any ECS resource of this account and region
    }
  }
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# --------------------------------------------------------------------------------------
# Task execution role (ECS agent: pull the image, write container logs).
# --------------------------------------------------------------------------------------
resource "aws_iam_role" "execution" {
  name               = "${var.name_prefix}-task-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrAuthToken"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # AWS requirement: GetAuthorizationToken has no resource-level scoping.
  }
  statement {
    sid = "PullBentoImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [var.ecr_repository_arn]
  }
  statement {
    sid       = "DecryptImageLayers"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
  statement {
    sid       = "WriteContainerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for arn in values(var.log_group_arns) : "${arn}:log-stream:*"] # streams of these exact groups
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-image-write-logs"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --------------------------------------------------------------------------------------
# Entry service: reads API keys and canary weights, sends to the deferred queue, stores
# a deferred request's payload and job record in the payload store and reads the job
# record and result back for GET /jobs/{id}.
# --------------------------------------------------------------------------------------
resource "aws_iam_role" "entry" {
  name               = "${var.name_prefix}-entry-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "entry" {
  statement {
    sid = "SendDeferredRequests"
    # GetQueueAttributes: the app reads the queue's RedrivePolicy (maxReceiveCount).
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
    resources = [var.deferred_queue_arn]
  }
  statement {
    sid = "DeferredPayloadStore"
    # Only the payload-store prefix of the output bucket; "*" is the object keys under
    # it (payloads, job records, results). No delete: the worker removes payloads, the
    # lifecycle rule expires the rest.
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = [local.payload_objects]
  }
  statement {
    sid = "ListDeferredPayloadStore"
    # Without s3:ListBucket, reading a missing key answers 403 AccessDenied instead of
    # 404 NoSuchKey, and GET /jobs/{unknown id} could not tell "no such job" from a
    # failure. S3 checks this with the object key as s3:prefix, so the condition keeps
    # it to the payload store ("*": any key under the prefix).
    actions   = ["s3:ListBucket"]
    resources = [var.batch_output_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.deferred_payload_prefix}*"]
    }
  }
  statement {
    sid       = "ReadApiKeys"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.api_keys_secret_arn]
  }
  statement {
    sid       = "ReadCanaryWeights"
    actions   = ["ssm:GetParameter"]
    resources = [var.canary_parameter_arn]
  }
  statement {
    # The CMK encrypts the deferred queue (SSE-KMS SQS) and the payload store's objects
    # (SSE-KMS S3 with a bucket key): GenerateDataKey to write, Decrypt to read.
    sid       = "UsePlatformKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "entry" {
  name   = "entry-least-privilege"
  role   = aws_iam_role.entry.id
  policy = data.aws_iam_policy_document.entry.json
}

# --------------------------------------------------------------------------------------
# Model services (GPU and CPU fallback): read model artifacts and registry/canary config.
# Identical permissions, separate roles so each service can diverge and is auditable.
# --------------------------------------------------------------------------------------
data "aws_iam_policy_document" "model" {
  statement {
    sid       = "ReadModelArtifacts"
    actions   = ["s3:GetObject"]
    resources = [local.model_objects]
  }
  statement {
    sid       = "ListModelArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [var.model_artifacts_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.model_artifacts_prefix}*"] # list only under the model prefix
    }
  }
  statement {
    sid       = "ReadModelConfig"
    actions   = ["ssm:GetParameter"]
    resources = [var.model_registry_parameter_arn, var.canary_parameter_arn]
  }
  statement {
    sid       = "DecryptModelArtifacts"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role" "model_gpu" {
  name               = "${var.name_prefix}-model-gpu-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "model_gpu" {
  name   = "model-least-privilege"
  role   = aws_iam_role.model_gpu.id
  policy = data.aws_iam_policy_document.model.json
}

resource "aws_iam_role" "model_cpu" {
  name               = "${var.name_prefix}-model-cpu-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "model_cpu" {
  name   = "model-least-privilege"
  role   = aws_iam_role.model_cpu.id
  policy = data.aws_iam_policy_document.model.json
}

# --------------------------------------------------------------------------------------
# Worker: consumes batch + deferred queues, dead-letters poison messages itself (so the
# DLQ message carries the failure reason), reads input recordings and models, writes
# results to the output bucket, and reads / updates / deletes deferred payloads and job
# records in the payload store.
# --------------------------------------------------------------------------------------
resource "aws_iam_role" "worker" {
  name               = "${var.name_prefix}-worker-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid = "ConsumeWorkQueues"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [var.batch_queue_arn, var.deferred_queue_arn]
  }
  statement {
    sid = "DeadLetterPoisonMessages"
    # SendMessage with the failure reason as message attributes, before DeleteMessage on
    # the source queue; GetQueueUrl resolves the DLQ named in the RedrivePolicy.
    actions   = ["sqs:SendMessage", "sqs:GetQueueUrl"]
    resources = [var.batch_dlq_arn, var.deferred_dlq_arn]
  }
  statement {
    sid       = "ReadBatchInput"
    actions   = ["s3:GetObject"]
    resources = [local.input_objects]
  }
  statement {
    sid = "WriteBatchOutput"
    # GetObject: the batch job HEADs its result key first and skips work already done.
    # "*": batch results go under the app's output prefix (embeddings/ by default, not
    # set by Terraform), so the whole bucket's keys; this also covers the payload store.
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${var.batch_output_bucket_arn}/*"]
  }
  statement {
    sid = "ListBatchOutput"
    # So that HEAD/GET of a key that does not exist yet (a new result, a job record)
    # answers 404 NoSuchKey, not 403 AccessDenied. Not narrowed by s3:prefix because the
    # output prefix is the app's setting, not Terraform's.
    actions   = ["s3:ListBucket"]
    resources = [var.batch_output_bucket_arn]
  }
  statement {
    sid = "DeferredPayloadStore"
    # "*" is the object keys under the payload-store prefix: read the payload and job
    # record, update the job record, write the result, delete the payload when done.
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [local.payload_objects]
  }
  statement {
    sid       = "ReadModelArtifacts"
    actions   = ["s3:GetObject"]
    resources = [local.model_objects]
  }
  statement {
    sid       = "ListModelArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [var.model_artifacts_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.model_artifacts_prefix}*"] # list only under the model prefix
    }
  }
  statement {
    sid       = "ReadModelConfig"
    actions   = ["ssm:GetParameter"]
    resources = [var.model_registry_parameter_arn, var.canary_parameter_arn]
  }
  statement {
    sid       = "UsePlatformKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "worker-least-privilege"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker.json
}

# --------------------------------------------------------------------------------------
# Index database (pgvector): the entry and the worker read the app role's secret. The
# secret is encrypted with the platform key, which both roles may already decrypt
# (UsePlatformKey). No database at all (index_backend = "hoplite"): no policy.
# --------------------------------------------------------------------------------------
data "aws_iam_policy_document" "index_db" {
  count = var.index_db_secret == null ? 0 : 1

  statement {
    sid       = "ReadIndexDbCredentials"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.index_db_secret.arn]
  }
}

resource "aws_iam_role_policy" "index_db" {
  for_each = var.index_db_secret == null ? {} : { entry = aws_iam_role.entry.id, worker = aws_iam_role.worker.id }
  name     = "read-index-db-credentials"
  role     = each.value
  policy   = data.aws_iam_policy_document.index_db[0].json
}

# --------------------------------------------------------------------------------------
# The index database's migration (`sevensense index migrate`, a one-off task): the only
# role that reads the master user's secret; it also reads the app secret, whose role and
# password it sets. The tasks above never see the master secret.
# --------------------------------------------------------------------------------------
resource "aws_iam_role" "index_migrate" {
  count              = var.index_db_secret == null ? 0 : 1
  name               = "${var.name_prefix}-index-migrate-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "index_migrate" {
  count = var.index_db_secret == null ? 0 : 1

  statement {
    sid       = "ReadMasterAndAppSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.index_db_secret.master_arn, var.index_db_secret.arn]
  }

  statement {
    sid       = "DecryptSecrets"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "index_migrate" {
  count  = var.index_db_secret == null ? 0 : 1
  name   = "index-migrate-least-privilege"
  role   = aws_iam_role.index_migrate[0].id
  policy = data.aws_iam_policy_document.index_migrate[0].json
}

# --------------------------------------------------------------------------------------
# GPU container instances: the ECS agent role (AWS-managed policy for the agent).
# --------------------------------------------------------------------------------------
resource "aws_iam_role" "gpu_instance" {
  name               = "${var.name_prefix}-gpu-instance"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "gpu_instance_ecs" {
  role       = aws_iam_role.gpu_instance.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"
}

resource "aws_iam_instance_profile" "gpu_instance" {
  name = "${var.name_prefix}-gpu-instance"
  role = aws_iam_role.gpu_instance.name
  tags = var.tags
}
