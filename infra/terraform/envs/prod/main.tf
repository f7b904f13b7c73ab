# Root configuration of the prod environment.
#
#   terraform init -backend-config=backend.hcl      # see backend.hcl.example
#   terraform apply -var-file=prod.tfvars            # see terraform.tfvars.example
terraform {
  required_version = ">= 1.10.0" # S3 backend native locking (use_lockfile)

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # Remote state in S3 with locking. Partial configuration: bucket, key, region and the
  # locking choice come from -backend-config (backend.hcl), so the same code serves any
  # account. CI runs `terraform init -backend=false`.
  backend "s3" {}
}

provider "aws" {
  region              = var.region
  allowed_account_ids = var.allowed_account_ids

  default_tags {
    tags = {
      Project     = "sevensense"
      Environment = "prod"
      ManagedBy   = "terraform"
      Repository  = "7sense/infra/terraform/envs/prod"
    }
  }
}

module "platform" {
  source = "../../modules/platform"

  environment        = "prod"
  image_tag          = var.image_tag
  certificate_arn    = var.certificate_arn
  bucket_name_suffix = var.bucket_name_suffix
  vpc_cidr           = "10.40.0.0/16"

  allowed_ingress_cidrs = var.allowed_ingress_cidrs
  alarm_emails          = var.alarm_emails
  index_backend         = var.index_backend

  # prod: three AZs, on-demand GPUs, nothing deletable by accident.
  az_count                = 3
  gpu_instance_types      = var.gpu_instance_types
  gpu_ami_id              = var.gpu_ami_id
  gpu_spot_percentage     = 0
  gpu_max_tasks           = 4
  entry_min_tasks         = 2
  entry_max_tasks         = 10
  cpu_model_min_tasks     = 2
  cpu_model_max_tasks     = 10
  worker_max_tasks        = 10
  worker_use_fargate_spot = false
  log_retention_days      = 365
  alb_deletion_protection = true
  force_destroy           = false
  index_db_max_capacity   = 16
}
