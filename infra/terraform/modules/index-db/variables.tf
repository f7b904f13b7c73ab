variable "name_prefix" {
  description = "Prefix for every resource name, e.g. \"sevensense-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name_prefix))
    error_message = "name_prefix must be 3-31 chars of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC of the platform (the database's security group lives there)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (no route to the internet) of at least two AZs for the DB subnet group."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids must name at least two subnets (Aurora needs two AZs)."
  }
}

variable "client_security_group_ids" {
  description = "Security groups of the tasks that may connect on the PostgreSQL port, by role (entry, worker). Nothing else is admitted."
  type        = map(string)

  validation {
    condition     = length(var.client_security_group_ids) > 0
    error_message = "client_security_group_ids must name at least one client security group."
  }
}

variable "kms_key_arn" {
  description = "CMK that encrypts the cluster's storage, the credentials secret, Performance Insights and the log group."
  type        = string
}

variable "engine_version" {
  description = "Aurora PostgreSQL version (pgvector 0.8 needs 16.8+, or 17.x)."
  type        = string
  default     = "16.8"

  validation {
    condition = can(regex("^[0-9]+\\.[0-9]+$", var.engine_version)) && (
      tonumber(split(".", var.engine_version)[0]) > 16 || (
        tonumber(split(".", var.engine_version)[0]) == 16 && tonumber(split(".", var.engine_version)[1]) >= 8
      )
    )
    error_message = "engine_version must be an Aurora PostgreSQL version with pgvector >= 0.8: 16.8 or later (MAJOR.MINOR)."
  }
}

variable "database_name" {
  description = "Database the app connects to (holds the index spaces)."
  type        = string
  default     = "sevensense"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must be a lowercase PostgreSQL identifier."
  }
}

variable "master_username" {
  description = "Master user the app connects as (it creates the vector extension and the index tables)."
  type        = string
  default     = "sevensense_admin"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.master_username)) && !contains(["postgres", "rdsadmin", "admin"], var.master_username)
    error_message = "master_username must be a lowercase identifier and not a reserved name."
  }
}

variable "password_version" {
  description = "Bump to set a new random master password on the cluster and in the credentials secret (write-only arguments: the password never enters the plan or state)."
  type        = number
  default     = 1

  validation {
    condition     = var.password_version >= 1 && floor(var.password_version) == var.password_version
    error_message = "password_version must be a positive integer."
  }
}

variable "app_username" {
  description = "Login role of the entry and worker tasks, created by `sevensense index migrate` (not the master user)."
  type        = string
  default     = "sevensense_app"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.app_username))
    error_message = "app_username must be a lower-case PostgreSQL identifier."
  }
}

variable "app_password_version" {
  description = "Bump to put a new random password in the app secret; then run the index_migrate task, which sets it on the role."
  type        = number
  default     = 1

  validation {
    condition     = var.app_password_version >= 1 && floor(var.app_password_version) == var.app_password_version
    error_message = "app_password_version must be a positive integer."
  }
}

variable "secret_recovery_window_days" {
  description = "Days a deleted credentials secret can be restored (0 deletes at once; 7-30 otherwise)."
  type        = number
  default     = 30

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "min_capacity" {
  description = "Minimum Aurora capacity units of the Serverless v2 writer (0 pauses it when idle, 0.5 steps)."
  type        = number
  default     = 0.5

  validation {
    condition     = var.min_capacity >= 0 && var.min_capacity <= 256 && floor(var.min_capacity * 2) == var.min_capacity * 2
    error_message = "min_capacity must be between 0 and 256 in steps of 0.5."
  }
}

variable "max_capacity" {
  description = "Maximum Aurora capacity units of the Serverless v2 writer (1 ACU is about 2 GiB of memory)."
  type        = number
  default     = 8

  validation {
    condition     = var.max_capacity >= 1 && var.max_capacity <= 256 && floor(var.max_capacity * 2) == var.max_capacity * 2 && var.max_capacity >= var.min_capacity
    error_message = "max_capacity must be between 1 and 256 in steps of 0.5, and not below min_capacity."
  }
}

variable "seconds_until_auto_pause" {
  description = "Idle seconds before a writer with min_capacity 0 pauses (300-86400); ignored otherwise."
  type        = number
  default     = 3600

  validation {
    condition     = var.seconds_until_auto_pause >= 300 && var.seconds_until_auto_pause <= 86400
    error_message = "seconds_until_auto_pause must be between 300 and 86400."
  }
}

variable "backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the cluster (turn off only for throw-away environments)."
  type        = bool
  default     = true
}

variable "skip_final_snapshot" {
  description = "Delete without a final snapshot (throw-away environments only)."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Retention of the cluster's PostgreSQL log group (a CloudWatch Logs retention value)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value."
  }
}

variable "slow_query_ms" {
  description = "Statements slower than this are logged (log_min_duration_statement, milliseconds)."
  type        = number
  default     = 1000

  validation {
    condition     = var.slow_query_ms >= 0
    error_message = "slow_query_ms must be >= 0."
  }
}

variable "performance_insights_retention_days" {
  description = "Performance Insights retention (7 is free; otherwise a multiple of 31, up to 731)."
  type        = number
  default     = 7

  validation {
    condition     = var.performance_insights_retention_days == 7 || var.performance_insights_retention_days == 731 || (var.performance_insights_retention_days % 31 == 0 && var.performance_insights_retention_days <= 713)
    error_message = "performance_insights_retention_days must be 7, a multiple of 31 up to 713, or 731."
  }
}

variable "monitoring_interval_seconds" {
  description = "Enhanced Monitoring interval of the writer (1, 5, 10, 15, 30 or 60 seconds)."
  type        = number
  default     = 60

  validation {
    condition     = contains([1, 5, 10, 15, 30, 60], var.monitoring_interval_seconds)
    error_message = "monitoring_interval_seconds must be 1, 5, 10, 15, 30 or 60."
  }
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
