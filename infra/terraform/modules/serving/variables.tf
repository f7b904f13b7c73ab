variable "name_prefix" {
  description = "Prefix for every resource name, e.g. \"sevensense-prod\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,20}$", var.name_prefix))
    error_message = "name_prefix must be 3-21 chars of lowercase letters, digits and hyphens (ALB and target group names are limited to 32 chars)."
  }
}

variable "image" {
  description = "Full image reference of the Bento image, <ecr url>:<immutable tag>."
  type        = string

  validation {
    condition     = can(regex("^[^\\s:]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$", var.image))
    error_message = "image must carry an explicit tag or digest (<repository>:<tag> or <repository>@sha256:<digest>)."
  }

  validation {
    condition     = !endswith(var.image, ":latest")
    error_message = "image must not use the mutable \"latest\" tag (the repository has immutable tags; roll back by tag)."
  }
}

variable "container_port" {
  description = "Port every BentoML container listens on."
  type        = number
  default     = 3000
}

variable "container_user" {
  description = "User the containers run as (the Bento image's non-root user)."
  type        = string
  default     = "bentoml"
}

variable "readonly_root_filesystem" {
  description = "Run containers with a read-only root filesystem (a task-scoped scratch volume is mounted on /tmp)."
  type        = bool
  default     = true
}

variable "entry_command" {
  description = "Container command of the entry role (the image's entrypoint runs it)."
  type        = list(string)
  default     = ["bentoml", "serve", "sevensense.serving.service:Entry", "--host", "0.0.0.0", "--port", "3000"]

  validation {
    condition     = length(var.entry_command) >= 2 && var.entry_command[0] == "bentoml" && var.entry_command[1] == "serve"
    error_message = "entry_command must start with \"bentoml serve\"."
  }
}

variable "model_gpu_command" {
  description = "Container command of the GPU model role."
  type        = list(string)
  default     = ["bentoml", "serve", "sevensense.serving.service:GpuModel", "--host", "0.0.0.0", "--port", "3000"]

  validation {
    condition     = length(var.model_gpu_command) >= 2 && var.model_gpu_command[0] == "bentoml" && var.model_gpu_command[1] == "serve"
    error_message = "model_gpu_command must start with \"bentoml serve\"."
  }
}

variable "model_cpu_command" {
  description = "Container command of the CPU fallback model role."
  type        = list(string)
  default     = ["bentoml", "serve", "sevensense.serving.service:CpuModel", "--host", "0.0.0.0", "--port", "3000"]

  validation {
    condition     = length(var.model_cpu_command) >= 2 && var.model_cpu_command[0] == "bentoml" && var.model_cpu_command[1] == "serve"
    error_message = "model_cpu_command must start with \"bentoml serve\"."
  }
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
  description = "Private subnets for tasks (and an internal ALB)."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Public subnets for an internet-facing ALB."
  type        = list(string)
}

variable "s3_prefix_list_id" {
  description = "Prefix list of the S3 gateway endpoint."
  type        = string
}

variable "cluster_name" {
  description = "ECS cluster name."
  type        = string
}

variable "cluster_arn" {
  description = "ECS cluster ARN."
  type        = string
}

variable "service_connect_namespace_arn" {
  description = "Service Connect namespace ARN."
  type        = string
}

variable "gpu_capacity_provider_name" {
  description = "Capacity provider of the GPU Auto Scaling group."
  type        = string
}

variable "execution_role_arn" {
  description = "Task execution role ARN."
  type        = string
}

variable "entry_task_role_arn" {
  description = "Task role of the entry service."
  type        = string
}

variable "model_gpu_task_role_arn" {
  description = "Task role of the GPU model service."
  type        = string
}

variable "model_cpu_task_role_arn" {
  description = "Task role of the CPU model service."
  type        = string
}

variable "log_group_names" {
  description = "Log group name per service; needs keys entry, model-gpu, model-cpu."
  type        = map(string)

  validation {
    condition     = alltrue([for k in ["entry", "model-gpu", "model-cpu"] : contains(keys(var.log_group_names), k)])
    error_message = "log_group_names must have the keys entry, model-gpu and model-cpu."
  }
}

variable "kms_key_arn" {
  description = "CMK ARN for the WAF log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the WAF log group."
  type        = number
  default     = 365
}

variable "certificate_arn" {
  description = "ACM certificate ARN for the HTTPS listener (in the same region as the ALB)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[A-Za-z0-9-]+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)."
  }
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"

  validation {
    condition     = startswith(var.ssl_policy, "ELBSecurityPolicy-TLS13-") || startswith(var.ssl_policy, "ELBSecurityPolicy-FS-1-2-")
    error_message = "ssl_policy must be a TLS 1.2+/1.3 policy (ELBSecurityPolicy-TLS13-* or ELBSecurityPolicy-FS-1-2-*)."
  }
}

variable "allowed_ingress_cidrs" {
  description = "Client CIDRs allowed to reach the HTTPS listener."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.allowed_ingress_cidrs) > 0 && alltrue([for c in var.allowed_ingress_cidrs : can(cidrnetmask(c))])
    error_message = "allowed_ingress_cidrs must be a non-empty list of IPv4 CIDRs."
  }
}

variable "internal_alb" {
  description = "Make the ALB internal (partners reach it over VPN/peering) instead of internet-facing."
  type        = bool
  default     = false
}

variable "alb_deletion_protection" {
  description = "Protect the ALB from deletion."
  type        = bool
  default     = true
}

variable "alb_idle_timeout_seconds" {
  description = "ALB idle timeout; long enough for uploads of long recordings."
  type        = number
  default     = 300

  validation {
    condition     = var.alb_idle_timeout_seconds >= 60 && var.alb_idle_timeout_seconds <= 4000
    error_message = "alb_idle_timeout_seconds must be between 60 and 4000."
  }
}

variable "entry_drain_seconds" {
  description = "The entry task's drain bound: the ALB's deregistration delay (in-flight requests and open streams keep their connection this long after the task leaves the target group) and the entry container's ECS stopTimeout (SIGTERM to SIGKILL), one number so the two match."
  type        = number
  default     = 30

  validation {
    condition     = var.entry_drain_seconds >= 5 && var.entry_drain_seconds <= 120
    error_message = "entry_drain_seconds must be between 5 and 120 (ECS stopTimeout's maximum on Fargate)."
  }
}

variable "access_log_bucket" {
  description = "Bucket receiving ALB access logs (prefix alb/)."
  type        = string
}

variable "waf_rate_limit_per_5min" {
  description = "Requests per client IP per 5 minutes before WAF blocks it."
  type        = number
  default     = 2000

  validation {
    condition     = var.waf_rate_limit_per_5min >= 100
    error_message = "waf_rate_limit_per_5min must be >= 100 (WAF minimum)."
  }
}

variable "waf_key_rate_limit_per_5min" {
  description = "Requests per API key per 5 minutes across the whole fleet before WAF blocks that key (the cluster bound; each entry task also meters serving.rate_limit_per_s per key)."
  type        = number
  default     = 6000

  validation {
    condition     = var.waf_key_rate_limit_per_5min >= 10
    error_message = "waf_key_rate_limit_per_5min must be >= 10 (WAF minimum)."
  }
}

variable "model_request_timeout_seconds" {
  description = "Service Connect per-request timeout from the entry to a model service."
  type        = number
  default     = 120
}

variable "model_start_period_seconds" {
  description = "Health-check grace for model containers (loading the ONNX model, GPU warm-up)."
  type        = number
  default     = 180
}

variable "deferred_queue_url" {
  description = "URL of the deferred-requests queue (SEVENSENSE_DEFERRED_QUEUE_URL)."
  type        = string
}

variable "payload_store_uri" {
  description = "Deferred-request payload store, s3://<bucket>/<prefix> (SEVENSENSE_PAYLOAD_STORE): the entry writes the payload and job record there and reads job records and results for GET /jobs/{id}."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/([^/]+/)*[^/]+$", var.payload_store_uri))
    error_message = "payload_store_uri must be s3://<bucket>/<prefix> with a non-empty prefix and no trailing slash."
  }
}

variable "api_keys_secret_arn" {
  description = "Partner API-keys secret ARN (SEVENSENSE_API_KEYS_SECRET_ARN)."
  type        = string
}

variable "index_db" {
  description = "pgvector index database the tasks use: the ARN of its credentials secret (SEVENSENSE_INDEX_DB_SECRET_ARN; JSON with host, port, dbname, username, password). null: no database, the app's embedded index."
  type = object({
    secret_arn = string
  })
  default = null
}

variable "model_registry_uri" {
  description = "Model registry S3 URI (SEVENSENSE_MODEL_REGISTRY_URI)."
  type        = string
}

variable "model_registry_parameter_name" {
  description = "SSM parameter with the registry URI (SEVENSENSE_MODEL_REGISTRY_PARAM)."
  type        = string
}

variable "canary_parameter_name" {
  description = "SSM parameter with the canary weights (SEVENSENSE_CANARY_PARAM)."
  type        = string
}

variable "entry_cpu" {
  description = "Fargate CPU units of an entry task."
  type        = number
  default     = 1024
}

variable "entry_memory" {
  description = "Fargate memory (MiB) of an entry task."
  type        = number
  default     = 2048
}

variable "entry_min_tasks" {
  description = "Minimum entry tasks."
  type        = number
  default     = 2

  validation {
    condition     = var.entry_min_tasks >= 1
    error_message = "entry_min_tasks must be >= 1: the HTTP entry never scales to zero."
  }
}

variable "entry_max_tasks" {
  description = "Maximum entry tasks."
  type        = number
  default     = 10
}

variable "entry_requests_per_target" {
  description = "Target ALB requests per entry task per minute."
  type        = number
  default     = 600
}

variable "entry_open_streams_per_task" {
  description = "Target open WebSocket streams per entry task (published by the entry as EMF)."
  type        = number
  default     = 40

  validation {
    condition     = var.entry_open_streams_per_task >= 1
    error_message = "entry_open_streams_per_task must be at least 1."
  }
}

variable "cpu_model_queue_wait_ms" {
  description = "Target mean batch queue wait (ms) of the CPU model service; its batching SLO is 5000 ms."
  type        = number
  default     = 1000

  validation {
    condition     = var.cpu_model_queue_wait_ms > 0
    error_message = "cpu_model_queue_wait_ms must be positive."
  }
}

variable "gpu_queue_wait_ms" {
  description = "Target mean batch queue wait (ms) of the GPU model service; its batching SLO is 1000 ms."
  type        = number
  default     = 250

  validation {
    condition     = var.gpu_queue_wait_ms > 0
    error_message = "gpu_queue_wait_ms must be positive."
  }
}

variable "cpu_model_pending_windows" {
  description = "Target windows pending (queued or in the running batch) per CPU model-service worker: two batches of cpu_max_batch_size (16), one running and one formed."
  type        = number
  default     = 32

  validation {
    condition     = var.cpu_model_pending_windows > 0
    error_message = "cpu_model_pending_windows must be positive."
  }
}

variable "gpu_pending_windows" {
  description = "Target windows pending (queued or in the running batch) per GPU model-service task: two batches of gpu_max_batch_size (32), one running and one formed."
  type        = number
  default     = 64

  validation {
    condition     = var.gpu_pending_windows > 0
    error_message = "gpu_pending_windows must be positive."
  }
}

variable "cpu_model_cpu" {
  description = "Fargate CPU units of a CPU model task."
  type        = number
  default     = 4096
}

variable "cpu_model_memory" {
  description = "Fargate memory (MiB) of a CPU model task."
  type        = number
  default     = 8192
}

variable "cpu_model_min_tasks" {
  description = "Minimum CPU fallback tasks. Keep >= 1 wherever the GPU service may be at zero, or requests wait for a GPU (or are deferred)."
  type        = number
  default     = 1

  validation {
    condition     = var.cpu_model_min_tasks >= 0
    error_message = "cpu_model_min_tasks must be >= 0."
  }
}

variable "cpu_model_max_tasks" {
  description = "Maximum CPU fallback tasks."
  type        = number
  default     = 10
}

variable "cpu_model_cpu_target_percent" {
  description = "Target average CPU of the CPU model service."
  type        = number
  default     = 60

  validation {
    condition     = var.cpu_model_cpu_target_percent >= 10 && var.cpu_model_cpu_target_percent <= 95
    error_message = "cpu_model_cpu_target_percent must be between 10 and 95."
  }
}

variable "gpu_task_cpu" {
  description = "CPU units reserved by a GPU model task on its instance."
  type        = number
  default     = 3072
}

variable "gpu_task_memory" {
  description = "Memory (MiB) reserved by a GPU model task on its instance."
  type        = number
  default     = 12288
}

variable "gpu_min_tasks" {
  description = "Minimum GPU model tasks (0 = GPU capacity scales to zero when idle)."
  type        = number
  default     = 0

  validation {
    condition     = var.gpu_min_tasks >= 0
    error_message = "gpu_min_tasks must be >= 0."
  }
}

variable "gpu_max_tasks" {
  description = "Maximum GPU model tasks (one GPU each)."
  type        = number
  default     = 4

  validation {
    condition     = var.gpu_max_tasks >= 1
    error_message = "gpu_max_tasks must be >= 1."
  }
}

variable "gpu_requests_per_task_per_minute" {
  description = "Target entry requests per minute per running GPU task."
  type        = number
  default     = 1200
}

variable "gpu_scale_in_cooldown_seconds" {
  description = "Cooldown before the GPU service scales in (GPU instances are slow to come back)."
  type        = number
  default     = 900
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
