# Unit tests of the storage-queues module with a mocked AWS provider (offline).

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_elb_service_account" {
    defaults = { arn = "arn:aws:iam::156460612806:root" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  name_prefix = "sevensense-test"
  kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
}

run "names" {
  command = plan

  assert {
    condition     = aws_sqs_queue.batch.name == "sevensense-test-batch-jobs" && aws_sqs_queue.batch_dlq.name == "sevensense-test-batch-jobs-dlq"
    error_message = "batch queue names"
  }
  assert {
    condition     = aws_sqs_queue.deferred.name == "sevensense-test-deferred-requests" && aws_sqs_queue.deferred_dlq.name == "sevensense-test-deferred-requests-dlq"
    error_message = "deferred queue names"
  }
  assert {
    condition     = local.bucket_names.batch_input == "sevensense-test-batch-in-123456789012-eu-west-1"
    error_message = "input bucket name is <prefix>-batch-in-<account>-<region>"
  }
  assert {
    condition     = aws_s3_bucket.access_logs.bucket == "sevensense-test-access-logs-123456789012-eu-west-1"
    error_message = "access-log bucket name"
  }
}

run "custom_bucket_suffix" {
  command = plan
  variables {
    bucket_name_suffix = "acme-eu"
  }
  assert {
    condition     = local.bucket_names.model_artifacts == "sevensense-test-models-acme-eu"
    error_message = "bucket_name_suffix replaces <account>-<region>"
  }
}

run "wiring" {
  command = apply

  # S3 -> batch queue, one configuration per suffix, all ObjectCreated under the prefix.
  assert {
    condition     = length(aws_s3_bucket_notification.batch_input.queue) == 5
    error_message = "one queue configuration per default suffix"
  }
  assert {
    condition     = alltrue([for q in aws_s3_bucket_notification.batch_input.queue : q.queue_arn == aws_sqs_queue.batch.arn && q.filter_prefix == "incoming/" && length(q.events) == 1 && contains(q.events, "s3:ObjectCreated:*")])
    error_message = "every notification goes to the batch queue for ObjectCreated under incoming/"
  }
  assert {
    condition     = aws_s3_bucket_notification.batch_input.bucket == module.batch_input.id
    error_message = "the notification is on the input bucket"
  }

  # Redrive.
  assert {
    condition     = jsondecode(aws_sqs_queue.batch.redrive_policy).deadLetterTargetArn == aws_sqs_queue.batch_dlq.arn && jsondecode(aws_sqs_queue.batch.redrive_policy).maxReceiveCount == 3
    error_message = "batch queue redrives to its DLQ after 3 receives"
  }
  assert {
    condition     = jsondecode(aws_sqs_queue.deferred.redrive_policy).deadLetterTargetArn == aws_sqs_queue.deferred_dlq.arn && jsondecode(aws_sqs_queue.deferred.redrive_policy).maxReceiveCount == 5
    error_message = "deferred queue redrives to its DLQ after 5 receives"
  }
  assert {
    condition     = jsondecode(aws_sqs_queue_redrive_allow_policy.batch_dlq[0].redrive_allow_policy).sourceQueueArns == [aws_sqs_queue.batch.arn]
    error_message = "batch DLQ only accepts redrives from the batch queue"
  }

  # Queue policy of the batch queue admits only S3 for the input bucket.
  assert {
    condition     = length([for s in data.aws_iam_policy_document.queue["batch"].statement : s if s.effect == "Allow"]) == 1
    error_message = "exactly one Allow statement on the batch queue"
  }
  assert {
    condition = anytrue([
      for s in data.aws_iam_policy_document.queue["batch"].statement : s.effect == "Allow" && anytrue([
        for c in s.condition : c.test == "ArnEquals" && c.variable == "aws:SourceArn" && length(c.values) == 1 && contains(c.values, module.batch_input.arn)
      ])
    ])
    error_message = "the batch queue policy admits the input bucket by aws:SourceArn"
  }
  assert {
    condition     = alltrue([for k in ["batch_dlq", "deferred", "deferred_dlq"] : length([for s in data.aws_iam_policy_document.queue[k].statement : s if s.effect == "Allow"]) == 0])
    error_message = "no other queue admits a principal by policy"
  }

  # Encryption with the given key everywhere.
  assert {
    condition     = alltrue([for q in [aws_sqs_queue.batch, aws_sqs_queue.batch_dlq, aws_sqs_queue.deferred, aws_sqs_queue.deferred_dlq] : q.kms_master_key_id == var.kms_key_arn])
    error_message = "all queues use the CMK"
  }
  assert {
    condition     = aws_sqs_queue.batch.visibility_timeout_seconds == 3600
    error_message = "batch visibility timeout default is one hour"
  }

  # Deferred-request payload store: the output bucket's deferred/ prefix.
  assert {
    condition     = output.payload_store_uri == "s3://${module.batch_output.id}/deferred" && output.deferred_payload_prefix == "deferred/"
    error_message = "payload store is s3://<batch output bucket>/deferred"
  }
}

run "moto_mode_drops_redrive_allow_policy" {
  command = plan
  variables {
    enable_redrive_allow_policy = false
  }
  assert {
    condition     = length(aws_sqs_queue_redrive_allow_policy.batch_dlq) == 0
    error_message = "enable_redrive_allow_policy = false removes the resource"
  }
}

run "rejects_suffix_without_dot" {
  command = plan
  variables {
    batch_input_suffixes = ["wav"]
  }
  expect_failures = [var.batch_input_suffixes]
}

run "rejects_duplicate_suffixes" {
  command = plan
  variables {
    batch_input_suffixes = [".wav", ".wav"]
  }
  expect_failures = [var.batch_input_suffixes]
}

run "rejects_visibility_timeout_above_sqs_max" {
  command = plan
  variables {
    batch_visibility_timeout_seconds = 50000
  }
  expect_failures = [var.batch_visibility_timeout_seconds]
}

run "rejects_leading_slash_prefix" {
  command = plan
  variables {
    batch_input_prefix = "/incoming/"
  }
  expect_failures = [var.batch_input_prefix]
}

run "rejects_empty_payload_prefix" {
  command = plan
  variables {
    deferred_payload_prefix = ""
  }
  expect_failures = [var.deferred_payload_prefix]
}

run "rejects_payload_prefix_without_slash" {
  command = plan
  variables {
    deferred_payload_prefix = "deferred"
  }
  expect_failures = [var.deferred_payload_prefix]
}

run "rejects_non_kms_arn" {
  command = plan
  variables {
    kms_key_arn = "alias/aws/sqs"
  }
  expect_failures = [var.kms_key_arn]
}

run "rejects_bad_receive_count" {
  command = plan
  variables {
    batch_max_receive_count = 0
  }
  expect_failures = [var.batch_max_receive_count]
}
