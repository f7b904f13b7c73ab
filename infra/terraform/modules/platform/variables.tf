variable "project" {
  description = "Project name, first part of every resource name."
  type        = string
  default     = "sevensense"

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.project))
    error_message = "project must be 2-12 lowercase letters/digits, starting with a letter."
  }
}

variable "environment" {
  description = "Environment name (dev, staging, prod)."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "image_tag" {
  description = "Immutable tag of the Bento image in the platform's ECR repository (e.g. v1.4.2 or a git SHA)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag)) && var.image_tag != "latest"
    error_message = "image_tag must be a valid, immutable Docker tag (not \"latest\")."
  }
}

variable "bucket_name_suffix" {
  description = "Suffix making bucket names globally unique; null uses <account id>-<region>."
  type        = string
  default     = null
}

variable "certificate_arn" {
  description = "ACM certificate ARN for the ALB's HTTPS listener."
  type        = string
}

variable "allowed_ingress_cidrs" {
  description = "Client CIDRs allowed to reach the API."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "internal_alb" {
  description = "Internal ALB instead of internet-facing."
  type        = bool
  default     = false
}

variable "alb_deletion_protection" {
  description = "Protect the ALB from deletion."
  type        = bool
  default     = true
}

variable "vpc_cidr" {
  description = "VPC CIDR block."
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "Availability zones to use (2 or 3)."
  type        = number
  default     = 2
}

variable "gpu_instance_types" {
  description = "GPU instance types for the GPU Auto Scaling group, in preference order."
  type        = list(string)
  default     = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]
}

variable "gpu_ami_id" {
  description = "Pins the GPU instances to this AMI, and so its NVIDIA driver (null: the current ECS GPU-optimised Amazon Linux 2023 AMI)."
  type        = string
  default     = null
}

variable "gpu_spot_percentage" {
  description = "Percentage of GPU instances bought as Spot."
  type        = number
  default     = 0
}

variable "gpu_min_tasks" {
  description = "Minimum GPU model tasks (0 = scale GPU capacity to zero)."
  type        = number
  default     = 0
}

variable "gpu_max_tasks" {
  description = "Maximum GPU model tasks (= maximum GPU instances, one GPU per task)."
  type        = number
  default     = 4
}

variable "entry_min_tasks" {
  description = "Minimum entry tasks."
  type        = number
  default     = 2
}

variable "entry_max_tasks" {
  description = "Maximum entry tasks."
  type        = number
  default     = 10
}

variable "cpu_model_min_tasks" {
  description = "Minimum CPU fallback model tasks."
  type        = number
  default     = 1
}

variable "cpu_model_max_tasks" {
  description = "Maximum CPU fallback model tasks."
  type        = number
  default     = 10
}

variable "worker_max_tasks" {
  description = "Maximum worker tasks (minimum is 0)."
  type        = number
  default     = 10
}

variable "worker_use_fargate_spot" {
  description = "Run workers on Fargate Spot."
  type        = bool
  default     = false
}

variable "batch_input_prefix" {
  description = "Key prefix in the input bucket that creates batch jobs."
  type        = string
  default     = "incoming/"
}

variable "batch_input_suffixes" {
  description = "Audio extensions that create batch jobs."
  type        = list(string)
  default     = [".wav", ".flac", ".mp3", ".ogg", ".opus"]
}

variable "batch_visibility_timeout_seconds" {
  description = "Visibility timeout of the batch queue (long recordings)."
  type        = number
  default     = 3600
}

variable "batch_max_receive_count" {
  description = "Receives before a batch job is dead-lettered."
  type        = number
  default     = 3
}

variable "deferred_max_receive_count" {
  description = "Receives before a deferred request is dead-lettered."
  type        = number
  default     = 5
}

variable "deferred_payload_expiration_days" {
  description = "Days a deferred request's payload, job record and result are kept in the payload store (s3://<batch output bucket>/deferred)."
  type        = number
  default     = 7
}

variable "model_artifacts_prefix" {
  description = "Prefix of model artifacts in the models bucket."
  type        = string
  default     = "models/"
}

variable "stable_model_version" {
  description = "Initial stable model version written to the canary parameter."
  type        = string
  default     = "perch-v2/2.0.0"
}

variable "index_backend" {
  description = "Where the similarity-search index lives: \"pgvector\" provisions Aurora PostgreSQL Serverless v2 for the entry and worker tasks; \"hoplite\" provisions no database (the app's embedded index, one task's local disk)."
  type        = string
  default     = "pgvector"

  validation {
    condition     = contains(["pgvector", "hoplite"], var.index_backend)
    error_message = "index_backend must be \"pgvector\" or \"hoplite\"."
  }
}

variable "index_db_engine_version" {
  description = "Aurora PostgreSQL version of the index database (pgvector 0.8 needs 16.8+)."
  type        = string
  default     = "16.8"
}

variable "index_db_min_capacity" {
  description = "Minimum Aurora capacity units of the index database writer (0 pauses it when idle)."
  type        = number
  default     = 0.5
}

variable "index_db_max_capacity" {
  description = "Maximum Aurora capacity units of the index database writer."
  type        = number
  default     = 8
}

variable "index_db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery) of the index database."
  type        = number
  default     = 7
}

variable "index_db_password_version" {
  description = "Bump to rotate the index database's master password (cluster and credentials secret change in one apply)."
  type        = number
  default     = 1
}

variable "index_db_app_password_version" {
  description = "Bump to put a new random password in the index database's app secret; then run the index_migrate task, which sets it on the role."
  type        = number
  default     = 1
}

variable "log_retention_days" {
  description = "Retention of all CloudWatch log groups."
  type        = number
  default     = 365
}

variable "alarm_emails" {
  description = "E-mail addresses notified by alarms."
  type        = list(string)
  default     = []
}

variable "latency_p99_threshold_seconds" {
  description = "p99 latency alarm threshold (seconds)."
  type        = number
  default     = 5
}

variable "force_destroy" {
  description = "Allow destroy to delete non-empty buckets/repositories and secrets at once (throw-away environments only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
