variable "name_prefix" {
  description = "Prefix for every resource name (also the cluster and namespace name)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,30}$", var.name_prefix))
    error_message = "name_prefix must be 3-31 chars of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "vpc_cidr" {
  description = "VPC CIDR (egress to interface endpoints)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for GPU instances."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids needs at least two subnets (two AZs)."
  }
}

variable "s3_prefix_list_id" {
  description = "Prefix list of the S3 gateway endpoint."
  type        = string
}

variable "kms_key_arn" {
  description = "CMK ARN (ECS Exec sessions and their audit log group)."
  type        = string
}

variable "gpu_instance_profile_name" {
  description = "Instance profile for GPU container instances."
  type        = string
}

variable "gpu_ami_ssm_parameter" {
  description = "Public SSM parameter with the ECS GPU-optimised AMI ID. The Amazon Linux 2023 GPU AMI ships the NVIDIA 580 driver branch that the image's CUDA 13 needs; the Amazon Linux 2 GPU AMI ships 550 (CUDA 12.4) and is refused."
  type        = string
  default     = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"

  validation {
    condition     = startswith(var.gpu_ami_ssm_parameter, "/aws/service/ecs/optimized-ami/") && strcontains(var.gpu_ami_ssm_parameter, "gpu")
    error_message = "gpu_ami_ssm_parameter must be an ECS GPU-optimised AMI parameter under /aws/service/ecs/optimized-ami/."
  }
  validation {
    condition     = !startswith(var.gpu_ami_ssm_parameter, "/aws/service/ecs/optimized-ami/amazon-linux-2/")
    error_message = "The Amazon Linux 2 ECS GPU AMI ships NVIDIA driver 550 (CUDA 12.4); the image needs CUDA 13 (driver >= 580): use the amazon-linux-2023 GPU AMI."
  }
}

variable "gpu_ami_id" {
  description = "Pins the GPU instances to this AMI (and so its NVIDIA driver) instead of the SSM parameter's current value; null follows the parameter."
  type        = string
  default     = null

  validation {
    condition     = var.gpu_ami_id == null || can(regex("^ami-[0-9a-f]{8,17}$", var.gpu_ami_id))
    error_message = "gpu_ami_id must be an AMI ID (ami-...) or null."
  }
}

variable "gpu_instance_types" {
  description = "GPU instance types for the ASG, in preference order (each must have an NVIDIA GPU)."
  type        = list(string)
  default     = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]

  validation {
    condition     = length(var.gpu_instance_types) > 0 && alltrue([for t in var.gpu_instance_types : can(regex("^(g4dn|g5|g5g|g6|g6e|gr6|p3|p4d|p5)\\.[0-9a-z]+$", t))])
    error_message = "gpu_instance_types must be a non-empty list of NVIDIA GPU instance types (g4dn, g5, g6, g6e, gr6, p3, p4d, p5 families)."
  }
}

variable "gpu_max_instances" {
  description = "Upper bound of GPU instances."
  type        = number
  default     = 4

  validation {
    condition     = var.gpu_max_instances >= 1 && var.gpu_max_instances <= 100
    error_message = "gpu_max_instances must be between 1 and 100."
  }
}

variable "gpu_spot_percentage" {
  description = "Percentage of GPU instances bought as Spot (0 = all on-demand)."
  type        = number
  default     = 0

  validation {
    condition     = var.gpu_spot_percentage >= 0 && var.gpu_spot_percentage <= 100
    error_message = "gpu_spot_percentage must be between 0 and 100."
  }
}

variable "gpu_target_capacity_percent" {
  description = "Managed scaling target utilisation of GPU instances (100 = no spare instance)."
  type        = number
  default     = 100

  validation {
    condition     = var.gpu_target_capacity_percent >= 1 && var.gpu_target_capacity_percent <= 100
    error_message = "gpu_target_capacity_percent must be between 1 and 100."
  }
}

variable "gpu_root_volume_gib" {
  description = "Root volume size of GPU instances (image layers of the Bento + CUDA runtime)."
  type        = number
  default     = 100

  validation {
    condition     = var.gpu_root_volume_gib >= 30
    error_message = "gpu_root_volume_gib must be >= 30."
  }
}

variable "log_retention_days" {
  description = "Retention of the ECS Exec audit log group."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
