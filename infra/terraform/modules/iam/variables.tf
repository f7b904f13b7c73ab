variable "name_prefix" {
  description = "Prefix for every resource name, e.g. \"sevensense-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name_prefix))
    error_message = "name_prefix must be 3-31 chars of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "ecr_repository_arn" {
  description = "ARN of the ECR repository the execution role may pull from."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the platform CMK."
  type        = string
}

variable "log_group_arns" {
  description = "Log group ARNs (by service) the execution role may write container logs to."
  type        = map(string)

  validation {
    condition     = length(var.log_group_arns) > 0 && alltrue([for a in values(var.log_group_arns) : !endswith(a, "*")])
    error_message = "log_group_arns must be a non-empty map of exact log group ARNs (no trailing wildcard)."
  }
}

variable "model_artifacts_bucket_arn" {
  description = "ARN of the model artifacts bucket."
  type        = string
}

variable "model_artifacts_prefix" {
  description = "Key prefix of model artifacts inside the models bucket."
  type        = string
  default     = "models/"

  validation {
    condition     = length(var.model_artifacts_prefix) > 0 && endswith(var.model_artifacts_prefix, "/")
    error_message = "model_artifacts_prefix must be a non-empty prefix ending in \"/\" (an empty prefix would grant the whole bucket)."
  }
}

variable "batch_input_bucket_arn" {
  description = "ARN of the batch input bucket."
  type        = string
}

variable "batch_input_prefix" {
  description = "Key prefix the worker may read in the batch input bucket."
  type        = string

  validation {
    condition     = length(var.batch_input_prefix) > 0
    error_message = "batch_input_prefix must not be empty (an empty prefix would grant the whole bucket)."
  }
}

variable "batch_output_bucket_arn" {
  description = "ARN of the batch output bucket."
  type        = string
}

variable "deferred_payload_prefix" {
  description = "Key prefix of the deferred-request payload store in the batch output bucket (entry and worker read and write there)."
  type        = string
  default     = "deferred/"

  validation {
    condition     = length(var.deferred_payload_prefix) > 1 && endswith(var.deferred_payload_prefix, "/") && !startswith(var.deferred_payload_prefix, "/")
    error_message = "deferred_payload_prefix must be a non-empty key prefix ending in \"/\" (an empty prefix would grant the whole output bucket)."
  }
}

variable "batch_queue_arn" {
  description = "ARN of the batch-jobs queue."
  type        = string
}

variable "deferred_queue_arn" {
  description = "ARN of the deferred-requests queue."
  type        = string
}

variable "batch_dlq_arn" {
  description = "ARN of the batch-jobs dead-letter queue (the worker dead-letters poison messages itself)."
  type        = string
}

variable "deferred_dlq_arn" {
  description = "ARN of the deferred-requests dead-letter queue (the worker dead-letters poison messages itself)."
  type        = string
}

variable "api_keys_secret_arn" {
  description = "ARN of the partner API-keys secret."
  type        = string
}

variable "index_db_secret" {
  description = "The index database's secrets: arn, the app role's (read by the entry and worker tasks); master_arn, the master user's (read only by the index_migrate task). null: no index database."
  type = object({
    arn        = string
    master_arn = string
  })
  default = null
}

variable "model_registry_parameter_arn" {
  description = "ARN of the model registry SSM parameter."
  type        = string
}

variable "canary_parameter_arn" {
  description = "ARN of the canary SSM parameter."
  type        = string
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
