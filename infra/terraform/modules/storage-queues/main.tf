# Storage and queues of the batch / deferred path, kept in one module because the wire
# between them (input bucket -> queue policy -> bucket notification) is one unit:
#
#   s3://<batch-input>/<prefix>*<suffix>  --ObjectCreated-->  batch-jobs queue  --> worker
#                                                              | maxReceiveCount
#                                                              v
#                                                            batch-jobs-dlq
#   entry service --SendMessage--> deferred-requests queue --> worker
#                                                              | maxReceiveCount
#                                                              v
#                                                            deferred-requests-dlq
#
# The payload of a deferred request (audio), its job record and its result are stored
# under <deferred_payload_prefix> of the batch output bucket (the payload store,
# s3://<batch-output>/deferred), expiring after
# deferred_payload_expiration_days. The worker also dead-letters poison messages
# itself (SendMessage to the DLQ with the failure reason as message attributes).

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_elb_service_account" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition
  # Bucket names are global: suffix them with account and region unless the operator
  # chose a suffix (an organisation naming convention).
  bucket_suffix = var.bucket_name_suffix != null ? var.bucket_name_suffix : "${local.account_id}-${local.region}"

  bucket_names = {
    access_logs     = "${var.name_prefix}-access-logs-${local.bucket_suffix}"
    model_artifacts = "${var.name_prefix}-models-${local.bucket_suffix}"
    batch_input     = "${var.name_prefix}-batch-in-${local.bucket_suffix}"
    batch_output    = "${var.name_prefix}-batch-out-${local.bucket_suffix}"
  }

  queue_names = {
    batch        = "${var.name_prefix}-batch-jobs"
    batch_dlq    = "${var.name_prefix}-batch-jobs-dlq"
    deferred     = "${var.name_prefix}-deferred-requests"
    deferred_dlq = "${var.name_prefix}-deferred-requests-dlq"
  }
}

# --------------------------------------------------------------------------------------
# Access-log bucket (S3 server access logs and ALB access logs).
# --------------------------------------------------------------------------------------
resource "aws_s3_bucket" "access_logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target bucket; logging it into itself would loop.
  #checkov:skip=CKV_AWS_144:Cross-region replication of access logs is not required.
  #checkov:skip=CKV_AWS_145:S3 server access logging and ALB access logs only support SSE-S3 (AES256) target buckets, not SSE-KMS.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events from the access-log bucket.
  bucket        = local.bucket_names.access_logs
  force_destroy = var.force_destroy
  tags          = merge(var.tags, { Purpose = "access-logs" })
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.access_log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.access_logs]
}

data "aws_iam_policy_document" "access_logs" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.access_logs.arn,
      "${aws_s3_bucket.access_logs.arn}/*",
    ]
    principals {
      type        = "AWS" # renders {"AWS": "*"}: everyone, as a Deny principal
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  # S3 server access logs: each source bucket may only write under its own prefix
  # (the target_prefix of its aws_s3_bucket_logging, s3/<bucket>/).
  dynamic "statement" {
    for_each = { for k, v in local.bucket_names : k => v if k != "access_logs" }
    content {
      sid       = "S3ServerAccessLogs${replace(title(replace(statement.key, "_", " ")), " ", "")}"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.access_logs.arn}/s3/${statement.value}/*"]
      principals {
        type        = "Service"
        identifiers = ["logging.s3.amazonaws.com"]
      }
      condition {
        test     = "ArnLike"
        variable = "aws:SourceArn"
        values   = ["arn:${local.partition}:s3:::${statement.value}"]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }

  statement {
    sid       = "AlbAccessLogs"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/alb/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }

  # Regions launched before August 2022 deliver ALB logs from a regional ELB account.
  statement {
    sid       = "AlbAccessLogsLegacyRegions"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.access_logs.arn}/alb/AWSLogs/${local.account_id}/*"]
    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
  }
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket     = aws_s3_bucket.access_logs.id
  policy     = data.aws_iam_policy_document.access_logs.json
  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

# --------------------------------------------------------------------------------------
# Data buckets.
# --------------------------------------------------------------------------------------
locals {
  # Taken from the policy resource on purpose: S3 rejects PutBucketLogging until the
  # target bucket's policy admits logging.s3.amazonaws.com (InvalidTargetBucketForLogging).
  access_log_target = aws_s3_bucket_policy.access_logs.bucket
}

module "model_artifacts" {
  source = "../s3-bucket"

  bucket_name                        = local.bucket_names.model_artifacts
  purpose                            = "model-artifacts"
  kms_key_arn                        = var.kms_key_arn
  access_log_bucket                  = local.access_log_target
  expiration_days                    = null # model versions are kept; rollbacks need them
  noncurrent_version_expiration_days = var.model_noncurrent_version_days
  force_destroy                      = var.force_destroy
  tags                               = var.tags
}

module "batch_input" {
  source = "../s3-bucket"

  bucket_name                        = local.bucket_names.batch_input
  purpose                            = "batch-input"
  kms_key_arn                        = var.kms_key_arn
  access_log_bucket                  = local.access_log_target
  expiration_days                    = var.batch_input_expiration_days
  noncurrent_version_expiration_days = 7
  force_destroy                      = var.force_destroy
  tags                               = var.tags
}

module "batch_output" {
  source = "../s3-bucket"

  bucket_name                        = local.bucket_names.batch_output
  purpose                            = "batch-output"
  kms_key_arn                        = var.kms_key_arn
  access_log_bucket                  = local.access_log_target
  expiration_days                    = var.batch_output_expiration_days
  noncurrent_version_expiration_days = 7
  # Deferred requests (payload audio, job records, results) live only as long as a
  # client may poll GET /jobs/{id}.
  prefix_expiration_days = { (var.deferred_payload_prefix) = var.deferred_payload_expiration_days }
  force_destroy          = var.force_destroy
  tags                   = var.tags
}

# --------------------------------------------------------------------------------------
# Queues. Each work queue has its own DLQ; each DLQ only accepts redrives from its queue.
# --------------------------------------------------------------------------------------
resource "aws_sqs_queue" "batch_dlq" {
  name                              = local.queue_names.batch_dlq
  message_retention_seconds         = 1209600 # 14 days, the SQS maximum
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = var.tags
}

resource "aws_sqs_queue" "batch" {
  name                              = local.queue_names.batch
  visibility_timeout_seconds        = var.batch_visibility_timeout_seconds
  message_retention_seconds         = var.message_retention_seconds
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.batch_dlq.arn
    maxReceiveCount     = var.batch_max_receive_count
  })
  tags = var.tags
}

resource "aws_sqs_queue" "deferred_dlq" {
  name                              = local.queue_names.deferred_dlq
  message_retention_seconds         = 1209600
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = var.tags
}

resource "aws_sqs_queue" "deferred" {
  name                              = local.queue_names.deferred
  visibility_timeout_seconds        = var.deferred_visibility_timeout_seconds
  message_retention_seconds         = var.message_retention_seconds
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.deferred_dlq.arn
    maxReceiveCount     = var.deferred_max_receive_count
  })
  tags = var.tags
}

resource "aws_sqs_queue_redrive_allow_policy" "batch_dlq" {
  count     = var.enable_redrive_allow_policy ? 1 : 0
  queue_url = aws_sqs_queue.batch_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.batch.arn]
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "deferred_dlq" {
  count     = var.enable_redrive_allow_policy ? 1 : 0
  queue_url = aws_sqs_queue.deferred_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.deferred.arn]
  })
}

# Queue policies. Only the batch queue admits a service principal: S3, for exactly the
# input bucket of this account. Every queue denies non-TLS access. In-account senders
# (the entry service -> deferred queue) are authorised by their IAM task role.
locals {
  queues = {
    batch        = aws_sqs_queue.batch
    batch_dlq    = aws_sqs_queue.batch_dlq
    deferred     = aws_sqs_queue.deferred
    deferred_dlq = aws_sqs_queue.deferred_dlq
  }
}

data "aws_iam_policy_document" "queue" {
  for_each = local.queues

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [each.value.arn]
    principals {
      type        = "AWS" # renders {"AWS": "*"}: everyone, as a Deny principal
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  dynamic "statement" {
    for_each = each.key == "batch" ? [1] : []
    content {
      sid       = "AllowBatchInputBucketNotifications"
      effect    = "Allow"
      actions   = ["sqs:SendMessage"]
      resources = [each.value.arn]
      principals {
        type        = "Service"
        identifiers = ["s3.amazonaws.com"]
      }
      condition {
        test     = "ArnEquals"
        variable = "aws:SourceArn"
        values   = [module.batch_input.arn]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [local.account_id]
      }
    }
  }
}

resource "aws_sqs_queue_policy" "this" {
  for_each  = local.queues
  queue_url = each.value.id
  policy    = data.aws_iam_policy_document.queue[each.key].json
}

# --------------------------------------------------------------------------------------
# S3 -> SQS wire: one queue configuration per accepted suffix (S3 filters take a single
# prefix and a single suffix; the configurations do not overlap because suffixes differ).
# --------------------------------------------------------------------------------------
resource "aws_s3_bucket_notification" "batch_input" {
  bucket = module.batch_input.id

  dynamic "queue" {
    for_each = var.batch_input_suffixes
    content {
      id            = "batch-jobs${replace(queue.value, ".", "-")}"
      queue_arn     = aws_sqs_queue.batch.arn
      events        = ["s3:ObjectCreated:*"]
      filter_prefix = var.batch_input_prefix
      filter_suffix = queue.value
    }
  }

  # S3 validates the destination when the configuration is written: the queue policy
  # admitting the bucket must exist first.
  depends_on = [aws_sqs_queue_policy.this]
}
