variable "name_prefix" {
  description = "Prefix for every resource name, e.g. \"sevensense-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name_prefix))
    error_message = "name_prefix must be 3-31 chars of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "image" {
  description = "Full image reference of the Bento image, <ecr url>:<immutable tag>."
  type        = string

  validation {
    condition     = can(regex("^[^\\s:]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$", var.image)) && !endswith(var.image, ":latest")
    error_message = "image must carry an explicit, non-\"latest\" tag or a digest."
  }
}

variable "command" {
  description = "Container command of the worker role."
  type        = list(string)
  default     = ["sevensense", "worker"]

  validation {
    condition     = length(var.command) >= 2 && var.command[0] == "sevensense" && var.command[1] == "worker"
    error_message = "command must start with \"sevensense worker\"."
  }
}

variable "container_user" {
  description = "User the container runs as."
  type        = string
  default     = "bentoml"
}

variable "readonly_root_filesystem" {
  description = "Run with a read-only root filesystem (/tmp is a task-scoped scratch volume)."
  type        = bool
  default     = true
}

variable "cluster_name" {
  description = "ECS cluster name."
  type        = string
}

variable "cluster_arn" {
  description = "ECS cluster ARN."
  type        = string
}

variable "vpc_id" {
  description = "ID of the platform VPC."
  type        = string
}

variable "vpc_cidr" {
  description = "VPC CIDR (egress to interface endpoints)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for worker tasks."
  type        = list(string)
}

variable "s3_prefix_list_id" {
  description = "Prefix list of the S3 gateway endpoint."
  type        = string
}

variable "execution_role_arn" {
  description = "Task execution role ARN."
  type        = string
}

variable "task_role_arn" {
  description = "Task role of the worker."
  type        = string
}

variable "log_group_name" {
  description = "Log group of the worker."
  type        = string
}

variable "batch_queue_url" {
  description = "URL of the batch-jobs queue."
  type        = string
}

variable "batch_queue_name" {
  description = "Name of the batch-jobs queue (scaling metric)."
  type        = string
}

variable "deferred_queue_url" {
  description = "URL of the deferred-requests queue."
  type        = string
}

variable "deferred_queue_name" {
  description = "Name of the deferred-requests queue (scaling metric)."
  type        = string
}

variable "payload_store_uri" {
  description = "Deferred-request payload store, s3://<bucket>/<prefix> (SEVENSENSE_PAYLOAD_STORE): the worker reads payloads and job records there, updates the records and writes results."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/([^/]+/)*[^/]+$", var.payload_store_uri))
    error_message = "payload_store_uri must be s3://<bucket>/<prefix> with a non-empty prefix and no trailing slash."
  }
}

variable "visibility_timeout_seconds" {
  description = "Batch queue visibility timeout; the worker extends it while a long recording is processed."
  type        = number
}

variable "batch_input_bucket" {
  description = "Batch input bucket name."
  type        = string
}

variable "batch_input_prefix" {
  description = "Key prefix of batch input recordings."
  type        = string
}

variable "batch_output_bucket" {
  description = "Batch output bucket name."
  type        = string
}

variable "index_db" {
  description = "pgvector index database the tasks use: the ARN of its credentials secret (SEVENSENSE_INDEX_DB_SECRET_ARN; JSON with host, port, dbname, username, password). null: no database, the app's embedded index."
  type = object({
    secret_arn = string
  })
  default = null
}

variable "index_migrate" {
  description = "The index database's one-off migration task (`sevensense index migrate`): the master user's secret and the task role that may read it; null: no index database."
  type = object({
    master_secret_arn = string
    task_role_arn     = string
  })
  default = null
}

variable "model_registry_uri" {
  description = "Model registry S3 URI."
  type        = string
}

variable "model_registry_parameter_name" {
  description = "SSM parameter with the model registry URI."
  type        = string
}

variable "canary_parameter_name" {
  description = "SSM parameter with the canary weights."
  type        = string
}

variable "cpu" {
  description = "Fargate CPU units per worker task."
  type        = number
  default     = 4096
}

variable "memory" {
  description = "Fargate memory (MiB) per worker task."
  type        = number
  default     = 8192
}

variable "ephemeral_storage_gib" {
  description = "Fargate ephemeral storage per task (21-200 GiB)."
  type        = number
  default     = 50

  validation {
    condition     = var.ephemeral_storage_gib >= 21 && var.ephemeral_storage_gib <= 200
    error_message = "ephemeral_storage_gib must be between 21 and 200."
  }
}

variable "min_tasks" {
  description = "Minimum worker tasks (0 = scale to zero when the queues are empty)."
  type        = number
  default     = 0

  validation {
    condition     = var.min_tasks >= 0
    error_message = "min_tasks must be >= 0."
  }
}

variable "max_tasks" {
  description = "Maximum worker tasks."
  type        = number
  default     = 10

  validation {
    condition     = var.max_tasks >= 1
    error_message = "max_tasks must be >= 1."
  }
}

variable "backlog_per_task" {
  description = "Acceptable messages (visible + in flight) per worker task: the target tracking value."
  type        = number
  default     = 10

  validation {
    condition     = var.backlog_per_task >= 1
    error_message = "backlog_per_task must be >= 1."
  }
}

variable "scale_in_cooldown_seconds" {
  description = "Cooldown before the worker service scales in."
  type        = number
  default     = 300
}

variable "use_fargate_spot" {
  description = "Run workers on Fargate Spot (interrupted messages reappear after the visibility timeout)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
