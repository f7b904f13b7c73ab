# Least-privilege roles. Every statement names exact ARNs (bucket/prefix, queue, secret,
# parameter, key, log group, repository); the only Resource "*" is
# ecr:GetAuthorizationToken, which AWS does not scope to resources.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition

  model_objects = "${var.model_artifacts_bucket_arn}/${var.model_artifacts_prefix}*"
  input_objects = "${var.batch_input_bucket_arn}/${var.batch_input_prefix}*"
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
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
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
    resources = [for arn in values(var.log_group_arns) : "${arn}:log-stream:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-image-write-logs"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --------------------------------------------------------------------------------------
# Entry service: reads API keys and canary weights, sends to the deferred queue.
# --------------------------------------------------------------------------------------
resource "aws_iam_role" "entry" {
  name               = "${var.name_prefix}-entry-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "entry" {
  statement {
    sid       = "SendDeferredRequests"
    actions   = ["sqs:SendMessage", "sqs:GetQueueUrl"]
    resources = [var.deferred_queue_arn]
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
      values   = ["${var.model_artifacts_prefix}*"]
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
# Worker: consumes batch + deferred queues, reads input recordings and models, writes
# results to the output bucket.
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
    sid       = "ReadBatchInput"
    actions   = ["s3:GetObject"]
    resources = [local.input_objects]
  }
  statement {
    sid       = "WriteBatchOutput"
    actions   = ["s3:PutObject"]
    resources = ["${var.batch_output_bucket_arn}/*"]
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
      values   = ["${var.model_artifacts_prefix}*"]
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
