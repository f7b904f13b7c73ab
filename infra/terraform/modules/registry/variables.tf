variable "repository_name" {
  description = "ECR repository name for the Bento image, e.g. \"sevensense-prod/bento\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$", var.repository_name)) && length(var.repository_name) <= 256
    error_message = "repository_name must be a valid ECR repository name (lowercase, digits, . _ - and / separators)."
  }
}

variable "kms_key_arn" {
  description = "CMK ARN that encrypts the images."
  type        = string
}

variable "release_tag_prefixes" {
  description = "Tag prefixes of release images kept by count (e.g. \"v\" for v1.2.3)."
  type        = list(string)
  default     = ["v"]

  validation {
    condition     = length(var.release_tag_prefixes) > 0
    error_message = "release_tag_prefixes must not be empty."
  }
}

variable "keep_release_images" {
  description = "How many release images to keep (the rollback window)."
  type        = number
  default     = 30

  validation {
    condition     = var.keep_release_images >= 2
    error_message = "keep_release_images must be >= 2, or a rollback has nothing to roll back to."
  }
}

variable "untagged_expiry_days" {
  description = "Days after which untagged images expire."
  type        = number
  default     = 7
}

variable "other_tagged_expiry_days" {
  description = "Days after which non-release tagged images expire."
  type        = number
  default     = 60
}

variable "force_delete" {
  description = "Allow terraform destroy to delete the repository with images in it."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
