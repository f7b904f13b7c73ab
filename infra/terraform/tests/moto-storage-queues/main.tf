# Test root: the KMS key plus the storage-queues module, as the platform wires them.
# tests/infra/test_moto_apply.py copies the terraform tree to a temporary directory,
# adds a provider override pointing every endpoint at a moto server on 127.0.0.1 and
# applies this configuration. Nothing here is ever applied against real AWS.
terraform {
  required_version = ">= 1.7.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

variable "region" {
  description = "Region of the (mocked) provider."
  type        = string
  default     = "eu-west-1"
}

variable "name_prefix" {
  description = "Prefix of the resources created by the test."
  type        = string
  default     = "sevensense-it"
}

provider "aws" {
  region = var.region
}

module "kms" {
  source = "../../modules/kms"

  name_prefix             = var.name_prefix
  deletion_window_in_days = 7
}

module "storage_queues" {
  source = "../../modules/storage-queues"

  name_prefix   = var.name_prefix
  kms_key_arn   = module.kms.key_arn
  force_destroy = true

  # moto 5.2.5 does not implement RedriveAllowPolicy; see the variable's description.
  enable_redrive_allow_policy = false
}

output "batch_input_bucket" {
  description = "Name of the created batch input bucket."
  value       = module.storage_queues.batch_input_bucket
}

output "batch_input_prefix" {
  description = "Key prefix that triggers batch jobs."
  value       = module.storage_queues.batch_input_prefix
}

output "batch_queue_url" {
  description = "URL of the created batch-jobs queue."
  value       = module.storage_queues.batch_queue_url
}

output "batch_dlq_url" {
  description = "URL of the created batch-jobs DLQ."
  value       = module.storage_queues.batch_dlq_url
}

output "deferred_queue_url" {
  description = "URL of the created deferred-requests queue."
  value       = module.storage_queues.deferred_queue_url
}
