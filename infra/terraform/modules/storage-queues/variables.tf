variable "name_prefix" {
  description = "Prefix for every resource name, e.g. \"sevensense-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name_prefix))
    error_message = "name_prefix must be 3-31 chars of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "bucket_name_suffix" {
  description = "Suffix that makes bucket names globally unique (<name_prefix>-<purpose>-<suffix>). null: <account id>-<region>."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name_suffix == null || can(regex("^[a-z0-9][a-z0-9-]{1,24}[a-z0-9]$", coalesce(var.bucket_name_suffix, "x")))
    error_message = "bucket_name_suffix must be 3-26 chars of lowercase letters, digits and hyphens."
  }
}

variable "kms_key_arn" {
  description = "ARN of the CMK that encrypts buckets and queues. Its key policy must let s3.amazonaws.com use it (see the kms module), or S3 cannot notify the encrypted batch queue."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:...)."
  }
}

variable "batch_input_prefix" {
  description = "Only objects under this key prefix in the batch input bucket create batch jobs."
  type        = string
  default     = "incoming/"

  validation {
    condition     = !startswith(var.batch_input_prefix, "/") && length(var.batch_input_prefix) <= 512
    error_message = "batch_input_prefix must not start with \"/\" (S3 keys have no leading slash)."
  }
}

variable "batch_input_suffixes" {
  description = "Object key suffixes (audio extensions) that create batch jobs; one S3 notification per suffix. Matching is case-sensitive."
  type        = list(string)
  default     = [".wav", ".flac", ".mp3", ".ogg", ".opus"]

  validation {
    condition     = length(var.batch_input_suffixes) > 0 && alltrue([for s in var.batch_input_suffixes : can(regex("^\\.[A-Za-z0-9]+$", s))])
    error_message = "batch_input_suffixes must be a non-empty list of extensions like \".wav\"."
  }

  validation {
    condition     = length(distinct(var.batch_input_suffixes)) == length(var.batch_input_suffixes)
    error_message = "batch_input_suffixes must not contain duplicates (S3 rejects overlapping notification filters)."
  }
}

variable "batch_visibility_timeout_seconds" {
  description = "Visibility timeout of the batch queue. Size it for the longest recording a worker processes in one go (the worker also extends it while it works)."
  type        = number
  default     = 3600

  validation {
    condition     = var.batch_visibility_timeout_seconds >= 300 && var.batch_visibility_timeout_seconds <= 43200
    error_message = "batch_visibility_timeout_seconds must be between 300 (5 min) and 43200 (12 h, the SQS maximum)."
  }
}

variable "deferred_visibility_timeout_seconds" {
  description = "Visibility timeout of the deferred-requests queue."
  type        = number
  default     = 900

  validation {
    condition     = var.deferred_visibility_timeout_seconds >= 60 && var.deferred_visibility_timeout_seconds <= 43200
    error_message = "deferred_visibility_timeout_seconds must be between 60 and 43200."
  }
}

variable "message_retention_seconds" {
  description = "How long unprocessed messages stay in the work queues."
  type        = number
  default     = 345600 # 4 days

  validation {
    condition     = var.message_retention_seconds >= 3600 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds must be between 3600 and 1209600 (14 days)."
  }
}

variable "batch_max_receive_count" {
  description = "Receives before a batch job moves to its DLQ."
  type        = number
  default     = 3

  validation {
    condition     = var.batch_max_receive_count >= 1 && var.batch_max_receive_count <= 1000
    error_message = "batch_max_receive_count must be between 1 and 1000."
  }
}

variable "deferred_max_receive_count" {
  description = "Receives before a deferred request moves to its DLQ."
  type        = number
  default     = 5

  validation {
    condition     = var.deferred_max_receive_count >= 1 && var.deferred_max_receive_count <= 1000
    error_message = "deferred_max_receive_count must be between 1 and 1000."
  }
}

variable "batch_input_expiration_days" {
  description = "Delete batch input recordings after this many days (null keeps them)."
  type        = number
  default     = 30
}

variable "batch_output_expiration_days" {
  description = "Delete batch results after this many days (null keeps them)."
  type        = number
  default     = 365
}

variable "deferred_payload_prefix" {
  description = "Key prefix of the deferred-request payload store in the batch output bucket (audio, job records, results)."
  type        = string
  default     = "deferred/"

  validation {
    condition     = can(regex("^([a-z0-9][a-z0-9_.-]*/)+$", var.deferred_payload_prefix))
    error_message = "deferred_payload_prefix must be a key prefix ending in \"/\" with no leading \"/\", e.g. \"deferred/\" (an empty prefix would grant and expire the whole bucket)."
  }
}

variable "deferred_payload_expiration_days" {
  description = "Delete deferred-request payloads, job records and results this many days after they were written."
  type        = number
  default     = 7

  validation {
    condition     = var.deferred_payload_expiration_days >= 1
    error_message = "deferred_payload_expiration_days must be >= 1."
  }
}

variable "model_noncurrent_version_days" {
  description = "Delete overwritten/deleted model artifact versions after this many days."
  type        = number
  default     = 90
}

variable "access_log_retention_days" {
  description = "Delete S3/ALB access logs after this many days."
  type        = number
  default     = 365

  validation {
    condition     = var.access_log_retention_days >= 1
    error_message = "access_log_retention_days must be >= 1."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete non-empty buckets (tests and throw-away environments only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}

variable "enable_redrive_allow_policy" {
  description = "Restrict each DLQ to redrives from its own queue (RedriveAllowPolicy). Always true in real environments; the moto integration test sets false because moto does not implement the attribute and the provider would wait for it forever."
  type        = bool
  default     = true
}
