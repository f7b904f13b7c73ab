# ECR repository (mocked AWS provider, offline).

mock_provider "aws" {}

variables {
  repository_name = "sevensense/test/bento"
  kms_key_arn     = "arn:aws:kms:eu-west-1:123456789012:key/k"
}

run "immutable_scanned_encrypted" {
  command = plan

  assert {
    condition     = aws_ecr_repository.this.image_tag_mutability == "IMMUTABLE"
    error_message = "tags are immutable"
  }
  assert {
    condition     = aws_ecr_repository.this.image_scanning_configuration[0].scan_on_push
    error_message = "scan on push"
  }
  assert {
    condition     = length(jsondecode(aws_ecr_lifecycle_policy.this.policy).rules) == 3
    error_message = "lifecycle rules"
  }
}

run "rejects_uppercase_name" {
  command = plan
  variables {
    repository_name = "SevenSense"
  }
  expect_failures = [var.repository_name]
}

run "rejects_tiny_rollback_window" {
  command = plan
  variables {
    keep_release_images = 1
  }
  expect_failures = [var.keep_release_images]
}
