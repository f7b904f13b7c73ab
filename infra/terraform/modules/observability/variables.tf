variable "name_prefix" {
  description = "Prefix for every resource name, e.g. \"sevensense-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name_prefix))
    error_message = "name_prefix must be 3-31 chars of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "kms_key_arn" {
  description = "CMK ARN for log groups and the alarm topic."
  type        = string
}

variable "service_names" {
  description = "Services that get a log group /<name_prefix>/ecs/<service>."
  type        = list(string)
  default     = ["entry", "model-gpu", "model-cpu", "worker"]

  validation {
    condition     = length(var.service_names) > 0 && alltrue([for s in var.service_names : can(regex("^[a-z][a-z0-9-]*$", s))])
    error_message = "service_names must be non-empty lowercase names."
  }
}

variable "log_retention_days" {
  description = "Retention of service logs in days (a CloudWatch Logs retention value)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 365, ...)."
  }
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic (each must confirm)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alarm_emails must contain e-mail addresses."
  }
}

variable "alb_arn_suffix" {
  description = "ARN suffix of the ALB (CloudWatch LoadBalancer dimension)."
  type        = string
}

variable "entry_target_group_arn_suffix" {
  description = "ARN suffix of the entry target group (CloudWatch TargetGroup dimension)."
  type        = string
}

variable "cluster_name" {
  description = "ECS cluster name."
  type        = string
}

variable "ecs_service_names" {
  description = "ECS service names shown on the dashboard."
  type        = list(string)
}

variable "gpu_capacity_provider_name" {
  description = "Name of the GPU capacity provider."
  type        = string
}

variable "batch_queue_name" {
  description = "Name of the batch-jobs queue."
  type        = string
}

variable "batch_dlq_name" {
  description = "Name of the batch-jobs DLQ."
  type        = string
}

variable "deferred_queue_name" {
  description = "Name of the deferred-requests queue."
  type        = string
}

variable "deferred_dlq_name" {
  description = "Name of the deferred-requests DLQ."
  type        = string
}

variable "batch_oldest_message_age_threshold_seconds" {
  description = "Alarm when the oldest batch job has waited longer than this."
  type        = number
  default     = 3600

  validation {
    condition     = var.batch_oldest_message_age_threshold_seconds >= 60
    error_message = "batch_oldest_message_age_threshold_seconds must be >= 60."
  }
}

variable "deferred_oldest_message_age_threshold_seconds" {
  description = "Alarm when the oldest deferred request has waited longer than this."
  type        = number
  default     = 900

  validation {
    condition     = var.deferred_oldest_message_age_threshold_seconds >= 60
    error_message = "deferred_oldest_message_age_threshold_seconds must be >= 60."
  }
}

variable "http_5xx_rate_threshold_percent" {
  description = "Alarm when more than this percentage of entry requests end in 5xx."
  type        = number
  default     = 2

  validation {
    condition     = var.http_5xx_rate_threshold_percent > 0 && var.http_5xx_rate_threshold_percent <= 100
    error_message = "http_5xx_rate_threshold_percent must be in (0, 100]."
  }
}

variable "latency_p99_threshold_seconds" {
  description = "Alarm when p99 entry response time exceeds this many seconds."
  type        = number
  default     = 5

  validation {
    condition     = var.latency_p99_threshold_seconds > 0
    error_message = "latency_p99_threshold_seconds must be positive."
  }
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
