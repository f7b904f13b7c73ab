# Network layout and validation (mocked AWS provider, offline).

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_availability_zones" {
    defaults = { names = ["eu-west-1a", "eu-west-1b", "eu-west-1c"] }
  }
}

variables {
  name_prefix = "sevensense-test"
  kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/k"
}

run "private_subnets_across_azs_and_endpoints" {
  command = plan

  assert {
    condition     = length(aws_subnet.private) == 2 && aws_subnet.private[0].availability_zone != aws_subnet.private[1].availability_zone
    error_message = "private subnets in two different AZs"
  }
  assert {
    condition     = alltrue([for s in concat(aws_subnet.private, aws_subnet.public) : s.map_public_ip_on_launch == false])
    error_message = "no subnet hands out public IPs"
  }
  assert {
    condition     = aws_vpc_endpoint.s3.vpc_endpoint_type == "Gateway" && aws_vpc_endpoint.s3.service_name == "com.amazonaws.eu-west-1.s3"
    error_message = "S3 gateway endpoint"
  }
  assert {
    condition     = alltrue([for s in ["sqs", "ecr.api", "ecr.dkr", "logs", "secretsmanager", "ssm", "ecs", "ecs-agent", "ecs-telemetry"] : contains(keys(aws_vpc_endpoint.interface), s)])
    error_message = "interface endpoints for SQS, ECR, logs, secrets, SSM and the ECS agent"
  }
  assert {
    condition     = alltrue([for e in aws_vpc_endpoint.interface : e.private_dns_enabled])
    error_message = "interface endpoints resolve the public service names privately"
  }
}

run "three_azs" {
  command = plan
  variables {
    az_count = 3
  }
  assert {
    condition     = length(aws_subnet.private) == 3 && length(distinct([for s in aws_subnet.private : s.cidr_block])) == 3
    error_message = "three distinct private subnets"
  }
}

run "rejects_single_az" {
  command = plan
  variables {
    az_count = 1
  }
  expect_failures = [var.az_count]
}

run "rejects_small_vpc" {
  command = plan
  variables {
    vpc_cidr = "10.0.0.0/24"
  }
  expect_failures = [var.vpc_cidr]
}

run "rejects_bad_retention" {
  command = plan
  variables {
    flow_log_retention_days = 42
  }
  expect_failures = [var.flow_log_retention_days]
}
