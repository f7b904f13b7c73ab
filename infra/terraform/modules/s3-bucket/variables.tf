variable "bucket_name" {
  description = "Globally unique bucket name."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 chars, lowercase, digits, dots, hyphens)."
  }
}

variable "purpose" {
  description = "Short purpose tag, e.g. \"model-artifacts\"."
  type        = string
}

variable "kms_key_arn" {
  description = "ARN of the CMK used for SSE-KMS default encryption."
  type        = string
}

variable "access_log_bucket" {
  description = "Name of the bucket that receives S3 server access logs."
  type        = string
}

variable "expiration_days" {
  description = "Expire current objects after this many days; null keeps them forever."
  type        = number
  default     = null

  validation {
    condition     = var.expiration_days == null || try(var.expiration_days >= 1, false)
    error_message = "expiration_days must be null or >= 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Delete non-current object versions after this many days."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be >= 1."
  }
}

variable "prefix_expiration_days" {
  description = "Extra lifecycle rules: expire current objects under each key prefix (map key, ending in \"/\") after that many days, and their non-current versions after 1 day. Empty: none."
  type        = map(number)
  default     = {}

  validation {
    condition     = alltrue([for p, d in var.prefix_expiration_days : length(p) > 1 && endswith(p, "/") && !startswith(p, "/") && d >= 1])
    error_message = "prefix_expiration_days keys must be non-empty key prefixes ending in \"/\" (no leading \"/\"), values >= 1 day."
  }
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a non-empty bucket (tests and throw-away envs only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
