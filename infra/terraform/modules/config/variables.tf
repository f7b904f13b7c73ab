variable "name_prefix" {
  description = "Prefix for every resource name, e.g. \"sevensense-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name_prefix))
    error_message = "name_prefix must be 3-31 chars of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "kms_key_arn" {
  description = "CMK ARN that encrypts the API-keys secret."
  type        = string
}

variable "model_registry_uri" {
  description = "S3 URI of the model registry root, e.g. s3://<models bucket>/models/."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", var.model_registry_uri))
    error_message = "model_registry_uri must be an s3:// URI."
  }
}

variable "stable_model_version" {
  description = "Initial stable model version, e.g. \"perch-v2/2.0.0\"."
  type        = string
  default     = "perch-v2/2.0.0"
}

variable "canary_model_version" {
  description = "Initial canary model version (null: no canary)."
  type        = string
  default     = null
}

variable "canary_weight" {
  description = "Initial share of traffic (0-1) sent to the canary model version."
  type        = number
  default     = 0

  validation {
    condition     = var.canary_weight >= 0 && var.canary_weight <= 1
    error_message = "canary_weight must be between 0 and 1."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can be restored (0 deletes at once; 7-30 otherwise)."
  type        = number
  default     = 30

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
