# Run-time configuration (mocked AWS provider, offline).

mock_provider "aws" {}

variables {
  name_prefix        = "sevensense-test"
  kms_key_arn        = "arn:aws:kms:eu-west-1:123456789012:key/k"
  model_registry_uri = "s3://sevensense-test-models-x/models/"
}

run "parameters" {
  command = plan

  assert {
    condition     = aws_ssm_parameter.canary.name == "/sevensense-test/canary" && jsondecode(aws_ssm_parameter.canary.value).canary_weight == 0
    error_message = "canary parameter starts with no canary traffic"
  }
  assert {
    condition     = aws_ssm_parameter.model_registry_uri.value == var.model_registry_uri
    error_message = "registry parameter holds the registry URI"
  }
  assert {
    condition     = aws_secretsmanager_secret.api_keys.name == "sevensense-test/api-keys" && aws_secretsmanager_secret.api_keys.kms_key_id == var.kms_key_arn
    error_message = "API keys secret is encrypted with the CMK"
  }
}

run "rejects_canary_weight_above_one" {
  command = plan
  variables {
    canary_weight = 1.5
  }
  expect_failures = [var.canary_weight]
}

run "rejects_non_s3_registry" {
  command = plan
  variables {
    model_registry_uri = "https://example.org/models"
  }
  expect_failures = [var.model_registry_uri]
}
