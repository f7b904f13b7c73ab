# Root configuration of the dev environment.
#
#   terraform init -backend-config=backend.hcl      # see backend.hcl.example
#   terraform apply -var-file=dev.tfvars            # see terraform.tfvars.example
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
      Environment = "dev"
      ManagedBy   = "terraform"
      Repository  = "7sense/infra/terraform/envs/dev"
    }
  }
}

module "platform" {
  source = "../../modules/platform"

  environment        = "dev"
  image_tag          = var.image_tag
  certificate_arn    = var.certificate_arn
  bucket_name_suffix = var.bucket_name_suffix
  vpc_cidr           = "10.41.0.0/16"

  allowed_ingress_cidrs = var.allowed_ingress_cidrs
  alarm_emails          = var.alarm_emails
  index_backend         = var.index_backend

  # dev: small, cheap, disposable.
  az_count                = 2
  gpu_instance_types      = var.gpu_instance_types
  gpu_ami_id              = var.gpu_ami_id
  gpu_spot_percentage     = 100
  gpu_max_tasks           = 1
  entry_min_tasks         = 1
  entry_max_tasks         = 2
  cpu_model_min_tasks     = 1
  cpu_model_max_tasks     = 2
  worker_max_tasks        = 2
  worker_use_fargate_spot = true
  log_retention_days      = 30
  alb_deletion_protection = false
  force_destroy           = true
  index_db_max_capacity   = 2
}
