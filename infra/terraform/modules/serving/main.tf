# HTTP serving on ECS:
#
#   client --HTTPS--> ALB (WAF) --> entry (Fargate, `bentoml serve` of the entry service)
#                                     |  Service Connect (Envoy sidecar, Cloud Map HTTP ns)
#                                     +--> http://model-gpu:3000  (EC2 GPU capacity provider)
#                                     +--> http://model-cpu:3000  (Fargate, CPU model path)
#                                     +--> deferred-requests queue (SQS) when both fail,
#                                          payload + job record in the payload store (S3)
#
# The entry tries the GPU model service first and falls back to the CPU service when
# the GPU service has no healthy endpoint (Envoy answers 503 at once), refuses the
# connection, answers 503/429, or times out. See README.md "Routing and failure".

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name
  port   = var.container_port

  gpu_dns = "model-gpu"
  cpu_dns = "model-cpu"

  services = {
    entry     = "${var.name_prefix}-entry"
    model_gpu = "${var.name_prefix}-model-gpu"
    model_cpu = "${var.name_prefix}-model-cpu"
  }

  common_env = {
    SEVENSENSE_PROFILE              = "cloud"
    SEVENSENSE_PORT                 = tostring(local.port)
    SEVENSENSE_MODEL_REGISTRY_URI   = var.model_registry_uri
    SEVENSENSE_MODEL_REGISTRY_PARAM = var.model_registry_parameter_name
    SEVENSENSE_CANARY_PARAM         = var.canary_parameter_name
    AWS_REGION                      = local.region
    AWS_DEFAULT_REGION              = local.region
    BENTOML_DO_NOT_TRACK            = "true"
  }

  # The pgvector index database, when the platform has one (modules/index-db).
  index_env = var.index_db == null ? tomap({}) : tomap({
    SEVENSENSE_INDEX__BACKEND      = "pgvector"
    SEVENSENSE_INDEX_DB_SECRET_ARN = var.index_db.secret_arn
  })

  # The scaling signals (autoscaling.tf), written to stdout as EMF each minute.
  scaling_env = {
    for k, name in local.services : k => {
      SEVENSENSE_SERVING__SCALING_METRICS__ENABLED = "true"
      SEVENSENSE_SERVING__SCALING_METRICS__SERVICE = name
    }
  }

  entry_env = merge(local.common_env, local.index_env, local.scaling_env.entry, {
    SEVENSENSE_ROLE                = "entry"
    SEVENSENSE_GPU_URL             = "http://${local.gpu_dns}:${local.port}"
    SEVENSENSE_CPU_URL             = "http://${local.cpu_dns}:${local.port}"
    SEVENSENSE_DEFERRED_QUEUE_URL  = var.deferred_queue_url
    SEVENSENSE_PAYLOAD_STORE       = var.payload_store_uri
    SEVENSENSE_API_KEYS_SECRET_ARN = var.api_keys_secret_arn
    # The cloud profile's chain (Appendix A.3) plus the deferred queue provisioned here.
    SEVENSENSE_FALLBACK__STRATEGIES = jsonencode(["quantized_model", "cached_embedding", "deferred_queue"])
  })
  gpu_env = merge(local.common_env, local.scaling_env.model_gpu, { SEVENSENSE_ROLE = "model-gpu", SEVENSENSE_DEVICE = "cuda" })
  cpu_env = merge(local.common_env, local.scaling_env.model_cpu, { SEVENSENSE_ROLE = "model-cpu", SEVENSENSE_DEVICE = "cpu" })

  # Container health check without curl (the Bento image always has python).
  health_check = {
    command     = ["CMD-SHELL", "python -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:${local.port}/readyz', timeout=4)\" || exit 1"]
    interval    = 15
    timeout     = 5
    retries     = 3
    startPeriod = var.model_start_period_seconds
  }

  scratch_volume = "scratch"
}

# --------------------------------------------------------------------------------------
# Security groups
# --------------------------------------------------------------------------------------
resource "aws_security_group" "alb" {
  name        = "${var.name_prefix}-alb"
  description = "Public HTTPS entry of the inference API"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-alb" })
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each          = toset(var.allowed_ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from allowed clients"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_entry" {
  security_group_id            = aws_security_group.alb.id
  description                  = "ALB to entry tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.entry.id
}

resource "aws_security_group" "entry" {
  name        = "${var.name_prefix}-entry"
  description = "Entry service tasks"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-entry" })
}

resource "aws_vpc_security_group_ingress_rule" "entry_from_alb" {
  security_group_id            = aws_security_group.entry.id
  description                  = "From the ALB"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_egress_rule" "entry_to_models" {
  security_group_id            = aws_security_group.entry.id
  description                  = "Entry to model services (Service Connect)"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.models.id
}

resource "aws_security_group" "models" {
  name        = "${var.name_prefix}-models"
  description = "GPU and CPU model service tasks"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-models" })
}

resource "aws_vpc_security_group_ingress_rule" "models_from_entry" {
  security_group_id            = aws_security_group.models.id
  description                  = "From entry tasks (Service Connect)"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.entry.id
}

# Both task security groups reach AWS APIs only via the VPC endpoints.
resource "aws_vpc_security_group_egress_rule" "endpoints" {
  for_each = {
    entry  = aws_security_group.entry.id
    models = aws_security_group.models.id
  }
  security_group_id = each.value
  description       = "HTTPS to interface VPC endpoints"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "s3" {
  for_each = {
    entry  = aws_security_group.entry.id
    models = aws_security_group.models.id
  }
  security_group_id = each.value
  description       = "HTTPS to S3 (gateway endpoint): model artifacts, ECR layers"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.s3_prefix_list_id
}

# --------------------------------------------------------------------------------------
# ALB + WAF
# --------------------------------------------------------------------------------------
resource "aws_lb" "this" {
  name                       = "${var.name_prefix}-api"
  load_balancer_type         = "application"
  internal                   = var.internal_alb
  subnets                    = var.internal_alb ? var.private_subnet_ids : var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection
  idle_timeout               = var.alb_idle_timeout_seconds

  access_logs {
    bucket  = var.access_log_bucket
    prefix  = "alb"
    enabled = true
  }

  tags = var.tags
}

resource "aws_lb_target_group" "entry" {
  #checkov:skip=CKV_AWS_378:TLS terminates at the ALB; ALB -> task traffic stays inside the VPC between security groups that admit only each other.
  name                 = "${var.name_prefix}-entry"
  port                 = local.port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  deregistration_delay = var.entry_drain_seconds

  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  tags = var.tags
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.entry.arn
  }

  tags = var.tags
}

resource "aws_cloudwatch_log_group" "waf" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days, chosen per environment (prod 365 days, dev shorter for cost).
  name              = "aws-waf-logs-${var.name_prefix}" # WAF requires the aws-waf-logs- prefix
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_wafv2_web_acl" "this" {
  name        = "${var.name_prefix}-api"
  description = "Managed protections, per-API-key and per-IP rate limits for the inference API"
  scope       = "REGIONAL"

  default_action {
    allow {}
  }

  # Uploads must carry a key: without one the request is refused here, from its headers,
  # and its body never reaches the entry (which would refuse it too, before reading it).
  rule {
    name     = "upload-without-api-key"
    priority = 5
    action {
      block {}
    }
    statement {
      and_statement {
        statement {
          or_statement {
            dynamic "statement" {
              for_each = ["POST", "PUT"]
              content {
                byte_match_statement {
                  search_string         = statement.value
                  positional_constraint = "EXACTLY"
                  field_to_match {
                    method {}
                  }
                  text_transformation {
                    priority = 0
                    type     = "NONE"
                  }
                }
              }
            }
          }
        }
        dynamic "statement" {
          for_each = ["x-api-key", "authorization"]
          content {
            not_statement {
              statement {
                size_constraint_statement {
                  comparison_operator = "GT"
                  size                = 0
                  field_to_match {
                    single_header {
                      name = statement.value
                    }
                  }
                  text_transformation {
                    priority = 0
                    type     = "NONE"
                  }
                }
              }
            }
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name_prefix}-upload-without-api-key"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-common"
    priority = 10
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"
        # Audio uploads are multipart bodies far above the rule set's 8 KB body limit.
        rule_action_override {
          name = "SizeRestrictions_BODY"
          action_to_use {
            count {}
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name_prefix}-aws-common"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "aws-known-bad-inputs"
    priority = 20
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name_prefix}-aws-known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  # The fleet-wide per-key limit: counted here, across every entry task, on the key header
  # (a request without it is not counted by these rules; the per-IP rule still counts it).
  # Each task's token bucket per key (serving.rate_limit_per_s) stays as the second line.
  dynamic "rule" {
    for_each = { "x-api-key" = 24, "authorization" = 25 }
    content {
      name     = "per-key-rate-limit-${rule.key}"
      priority = rule.value
      action {
        block {}
      }
      statement {
        rate_based_statement {
          limit                 = var.waf_key_rate_limit_per_5min
          evaluation_window_sec = 300
          aggregate_key_type    = "CUSTOM_KEYS"
          custom_key {
            header {
              name = rule.key
              text_transformation {
                priority = 0
                type     = "NONE"
              }
            }
          }
        }
      }
      visibility_config {
        cloudwatch_metrics_enabled = true
        metric_name                = "${var.name_prefix}-per-key-rate-limit-${rule.key}"
        sampled_requests_enabled   = true
      }
    }
  }

  rule {
    name     = "per-ip-rate-limit"
    priority = 30
    action {
      block {}
    }
    statement {
      rate_based_statement {
        limit              = var.waf_rate_limit_per_5min
        aggregate_key_type = "IP"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name_prefix}-per-ip-rate-limit"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name_prefix}-api"
    sampled_requests_enabled   = true
  }

  tags = var.tags
}

resource "aws_wafv2_web_acl_logging_configuration" "this" {
  resource_arn            = aws_wafv2_web_acl.this.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]
}

resource "aws_wafv2_web_acl_association" "this" {
  resource_arn = aws_lb.this.arn
  web_acl_arn  = aws_wafv2_web_acl.this.arn
}

# --------------------------------------------------------------------------------------
# Task definitions: one image, the role is chosen by command + SEVENSENSE_ROLE.
# --------------------------------------------------------------------------------------
resource "aws_ecs_task_definition" "entry" {
  family                   = local.services.entry
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.entry_cpu
  memory                   = var.entry_memory
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = var.entry_task_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = local.scratch_volume
  }

  container_definitions = jsonencode([{
    name                   = "entry"
    image                  = var.image
    essential              = true
    command                = var.entry_command
    readonlyRootFilesystem = var.readonly_root_filesystem
    user                   = var.container_user
    portMappings           = [{ name = "http", containerPort = local.port, protocol = "tcp", appProtocol = "http" }]
    environment            = [for k in sort(keys(local.entry_env)) : { name = k, value = local.entry_env[k] }]
    mountPoints            = [{ sourceVolume = local.scratch_volume, containerPath = "/tmp", readOnly = false }]
    healthCheck            = merge(local.health_check, { startPeriod = 60 })
    stopTimeout            = var.entry_drain_seconds
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["entry"]
        awslogs-region        = local.region
        awslogs-stream-prefix = "entry"
      }
    }
  }])

  tags = var.tags
}

resource "aws_ecs_task_definition" "model_gpu" {
  family                   = local.services.model_gpu
  requires_compatibilities = ["EC2"]
  network_mode             = "awsvpc"
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = var.model_gpu_task_role_arn

  volume {
    name = local.scratch_volume
  }

  container_definitions = jsonencode([{
    name                   = "model-gpu"
    image                  = var.image
    essential              = true
    command                = var.model_gpu_command
    cpu                    = var.gpu_task_cpu
    memoryReservation      = var.gpu_task_memory
    readonlyRootFilesystem = var.readonly_root_filesystem
    user                   = var.container_user
    resourceRequirements   = [{ type = "GPU", value = "1" }] # one GPU per task
    portMappings           = [{ name = "http", containerPort = local.port, protocol = "tcp", appProtocol = "http" }]
    environment            = [for k in sort(keys(local.gpu_env)) : { name = k, value = local.gpu_env[k] }]
    mountPoints            = [{ sourceVolume = local.scratch_volume, containerPath = "/tmp", readOnly = false }]
    healthCheck            = local.health_check
    stopTimeout            = 120
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["model-gpu"]
        awslogs-region        = local.region
        awslogs-stream-prefix = "model-gpu"
      }
    }
  }])

  tags = var.tags
}

resource "aws_ecs_task_definition" "model_cpu" {
  family                   = local.services.model_cpu
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu_model_cpu
  memory                   = var.cpu_model_memory
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = var.model_cpu_task_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = local.scratch_volume
  }

  container_definitions = jsonencode([{
    name                   = "model-cpu"
    image                  = var.image
    essential              = true
    command                = var.model_cpu_command
    readonlyRootFilesystem = var.readonly_root_filesystem
    user                   = var.container_user
    portMappings           = [{ name = "http", containerPort = local.port, protocol = "tcp", appProtocol = "http" }]
    environment            = [for k in sort(keys(local.cpu_env)) : { name = k, value = local.cpu_env[k] }]
    mountPoints            = [{ sourceVolume = local.scratch_volume, containerPath = "/tmp", readOnly = false }]
    healthCheck            = local.health_check
    stopTimeout            = 120
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["model-cpu"]
        awslogs-region        = local.region
        awslogs-stream-prefix = "model-cpu"
      }
    }
  }])

  tags = var.tags
}

# --------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------
resource "aws_ecs_service" "model_gpu" {
  name                               = local.services.model_gpu
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.model_gpu.arn
  desired_count                      = var.gpu_min_tasks
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"

  capacity_provider_strategy {
    capacity_provider = var.gpu_capacity_provider_name
    weight            = 1
    base              = 0
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.models.id]
    assign_public_ip = false
  }

  service_connect_configuration {
    enabled   = true
    namespace = var.service_connect_namespace_arn
    service {
      port_name      = "http"
      discovery_name = local.gpu_dns
      client_alias {
        port     = local.port
        dns_name = local.gpu_dns
      }
      timeout {
        per_request_timeout_seconds = var.model_request_timeout_seconds
      }
    }
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count] # owned by Application Auto Scaling
  }

  tags = var.tags
}

resource "aws_ecs_service" "model_cpu" {
  name                               = local.services.model_cpu
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.model_cpu.arn
  desired_count                      = var.cpu_model_min_tasks
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  platform_version                   = "LATEST"

  capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
    base              = 0
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.models.id]
    assign_public_ip = false
  }

  service_connect_configuration {
    enabled   = true
    namespace = var.service_connect_namespace_arn
    service {
      port_name      = "http"
      discovery_name = local.cpu_dns
      client_alias {
        port     = local.port
        dns_name = local.cpu_dns
      }
      timeout {
        per_request_timeout_seconds = var.model_request_timeout_seconds
      }
    }
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count]
  }

  tags = var.tags
}

resource "aws_ecs_service" "entry" {
  name                               = local.services.entry
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.entry.arn
  desired_count                      = var.entry_min_tasks
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 60
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  platform_version                   = "LATEST"

  capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
    base              = 0
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.entry.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.entry.arn
    container_name   = "entry"
    container_port   = local.port
  }

  # Client-only Service Connect: gives the entry the model-gpu / model-cpu names.
  service_connect_configuration {
    enabled   = true
    namespace = var.service_connect_namespace_arn
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  lifecycle {
    ignore_changes = [desired_count]
  }

  # The model services must be registered before the entry's proxy resolves them.
  depends_on = [aws_lb_listener.https, aws_ecs_service.model_cpu, aws_ecs_service.model_gpu]

  tags = var.tags
}
