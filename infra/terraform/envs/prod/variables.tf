variable "region" {
  description = "AWS region of the environment."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like an AWS region, e.g. eu-west-1."
  }
}

variable "allowed_account_ids" {
  description = "AWS account IDs this configuration may be applied to (guards against the wrong credentials). Empty = no guard."
  type        = list(string)
  default     = null

  validation {
    condition     = var.allowed_account_ids == null || alltrue([for a in coalesce(var.allowed_account_ids, []) : can(regex("^[0-9]{12}$", a))])
    error_message = "allowed_account_ids must be 12-digit AWS account IDs."
  }
}

variable "image_tag" {
  description = "Immutable tag of the Bento image to run (pushed to the ECR repository output ecr_repository_url)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid, immutable Docker tag (not \"latest\")."
  }
}

variable "certificate_arn" {
  description = "ACM certificate ARN for the HTTPS listener (same region)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[A-Za-z0-9-]+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "allowed_ingress_cidrs" {
  description = "Client CIDRs allowed to reach the API."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alarm_emails" {
  description = "E-mail addresses notified by alarms."
  type        = list(string)
  default     = []
}

variable "gpu_instance_types" {
  description = "GPU instance types, in preference order."
  type        = list(string)
  default     = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]
}

variable "gpu_ami_id" {
  description = "Pins the GPU instances to this AMI, and so its NVIDIA driver (null: the current ECS GPU-optimised Amazon Linux 2023 AMI)."
  type        = string
  default     = null
}

variable "bucket_name_suffix" {
  description = "Suffix making bucket names globally unique (<project>-<env>-<purpose>-<suffix>); null uses <account id>-<region>."
  type        = string
  default     = null
}

variable "index_backend" {
  description = "Similarity-search index: \"pgvector\" (Aurora PostgreSQL Serverless v2, shared by all tasks) or \"hoplite\" (no database)."
  type        = string
  default     = "pgvector"
}
