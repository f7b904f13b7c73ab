# The hardened bucket's lifecycle rules (mocked AWS provider, offline).

mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  bucket_name                        = "sevensense-test-batch-out-acme"
  purpose                            = "batch-output"
  kms_key_arn                        = "arn:aws:kms:eu-west-1:123456789012:key/k"
  access_log_bucket                  = "sevensense-test-access-logs-acme"
  expiration_days                    = 365
  noncurrent_version_expiration_days = 7
}

# apply (against the mock): some nested rule attributes are only known after apply.
run "bucket_wide_retention_only" {
  command = apply

  assert {
    condition     = length(aws_s3_bucket_lifecycle_configuration.this.rule) == 1
    error_message = "one bucket-wide rule without prefix_expiration_days"
  }
  assert {
    condition     = one(aws_s3_bucket_lifecycle_configuration.this.rule).expiration[0].days == 365 && one(aws_s3_bucket_lifecycle_configuration.this.rule).noncurrent_version_expiration[0].noncurrent_days == 7
    error_message = "bucket-wide expiration and non-current retention"
  }
}

run "prefix_expiration" {
  command = apply
  variables {
    prefix_expiration_days = { "deferred/" = 7 }
  }

  assert {
    condition     = length(aws_s3_bucket_lifecycle_configuration.this.rule) == 2
    error_message = "bucket-wide rule plus one rule per prefix"
  }
  assert {
    condition = length([
      for r in aws_s3_bucket_lifecycle_configuration.this.rule : r
      if r.id == "expire-deferred" && r.status == "Enabled" && r.filter[0].prefix == "deferred/" && r.expiration[0].days == 7 && r.noncurrent_version_expiration[0].noncurrent_days == 1
    ]) == 1
    error_message = "deferred/ objects expire after 7 days, their non-current versions after 1"
  }
  assert {
    condition = length([
      for r in aws_s3_bucket_lifecycle_configuration.this.rule : r
      if r.id == "retention" && r.expiration[0].days == 365
    ]) == 1
    error_message = "the bucket-wide 365-day rule stays"
  }
}

run "rejects_empty_prefix" {
  command = plan
  variables {
    prefix_expiration_days = { "" = 7 }
  }
  expect_failures = [var.prefix_expiration_days]
}

run "rejects_zero_days" {
  command = plan
  variables {
    prefix_expiration_days = { "deferred/" = 0 }
  }
  expect_failures = [var.prefix_expiration_days]
}
