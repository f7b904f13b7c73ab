# Platform CMK: the key policy admits exactly the services that encrypt with it
# (mocked AWS provider, offline).

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
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  name_prefix = "sevensense-test"
}

run "key_policy" {
  command = plan

  assert {
    condition     = aws_kms_key.this.enable_key_rotation && aws_kms_alias.this.name == "alias/sevensense-test"
    error_message = "rotation on, alias named after the environment"
  }
  assert {
    # S3 must be able to use the key, or it cannot deliver notifications to the
    # SSE-KMS batch queue.
    condition = anytrue([
      for s in data.aws_iam_policy_document.key.statement :
      anytrue([for p in s.principals : contains(p.identifiers, "s3.amazonaws.com")]) && contains(s.actions, "kms:GenerateDataKey") && contains(s.actions, "kms:Decrypt")
    ])
    error_message = "S3 may GenerateDataKey/Decrypt (S3 -> SSE-KMS SQS notifications)"
  }
  assert {
    condition = toset(flatten([
      for s in data.aws_iam_policy_document.key.statement : [for p in s.principals : p.identifiers if p.type == "Service"]
    ])) == toset(["logs.eu-west-1.amazonaws.com", "s3.amazonaws.com", "cloudwatch.amazonaws.com"])
    error_message = "only the logs, S3 and CloudWatch service principals are admitted"
  }
}

run "rejects_short_deletion_window" {
  command = plan
  variables {
    deletion_window_in_days = 3
  }
  expect_failures = [var.deletion_window_in_days]
}
