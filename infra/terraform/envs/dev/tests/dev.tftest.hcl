# The whole dev platform composes and plans with a mocked AWS provider (offline), and
# the environment's input validation rejects bad values.

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
  mock_data "aws_availability_zones" {
    defaults = { names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"] }
  }
  mock_data "aws_elb_service_account" {
    defaults = { arn = "arn:aws:iam::156460612806:root" }
  }
  mock_data "aws_ssm_parameter" {
    defaults = { value = "ami-0123456789abcdef0" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  image_tag       = "v0.1.0"
  certificate_arn = "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123"
}

run "dev_platform_plans" {
  command = plan

  assert {
    condition     = module.platform.batch_input_prefix == "incoming/"
    error_message = "batch prefix"
  }
  assert {
    condition     = module.platform.canary_parameter_name == "/sevensense-dev/canary" && module.platform.model_registry_parameter_name == "/sevensense-dev/model-registry-uri"
    error_message = "SSM parameter names"
  }
  assert {
    condition     = module.platform.service_names == { entry = "sevensense-dev-entry", model_gpu = "sevensense-dev-model-gpu", model_cpu = "sevensense-dev-model-cpu", worker = "sevensense-dev-worker" }
    error_message = "service names"
  }
  assert {
    condition     = module.platform.index_backend == "pgvector"
    error_message = "the pgvector index database is on by default"
  }
}

# A deployment without the index database still plans: no cluster, no secret, no grant.
run "dev_platform_without_index_db" {
  command = plan
  variables {
    index_backend = "hoplite"
  }

  assert {
    condition     = module.platform.index_backend == "hoplite" && module.platform.index_db_endpoint == null && module.platform.index_db_secret_arn == null && module.platform.index_db_url == null
    error_message = "hoplite: no index database"
  }
}

run "rejects_latest_image_tag" {
  command = plan
  variables {
    image_tag = "latest"
  }
  expect_failures = [var.image_tag]
}

run "rejects_bad_certificate_arn" {
  command = plan
  variables {
    certificate_arn = "not-an-arn"
  }
  expect_failures = [var.certificate_arn]
}

run "rejects_bad_account_guard" {
  command = plan
  variables {
    allowed_account_ids = ["12345"]
  }
  expect_failures = [var.allowed_account_ids]
}
