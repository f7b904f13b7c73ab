# Batch / deferred worker on Fargate: `sevensense worker` consumes the batch-jobs queue
# (S3 ObjectCreated events) and the deferred-requests queue, reads recordings from the
# input bucket, writes results to the output bucket. Deferred requests: payload, job
# record and result live in the payload store (SEVENSENSE_PAYLOAD_STORE). Poison
# messages are moved to the queue's DLQ by the worker itself, with the failure reason.
#
# Scaling on SQS backlog per task:
#   backlog = visible + in-flight messages of both queues
#   target tracking keeps backlog / running tasks near worker_backlog_per_task, and
#   scales in to worker_min_tasks (0 by default) once the backlog is 0 (in-flight
#   messages count, so a task is not stopped while it still works on a message);
#   a step policy wakes the service from zero: when the service has no desired task and
#   a queue has visible messages, it adds one task.

data "aws_region" "current" {}

locals {
  region  = data.aws_region.current.name
  service = "${var.name_prefix}-worker"

  # The pgvector index database, when the platform has one (modules/index-db).
  index_env = var.index_db == null ? tomap({}) : tomap({
    SEVENSENSE_INDEX__BACKEND      = "pgvector"
    SEVENSENSE_INDEX_DB_SECRET_ARN = var.index_db.secret_arn
  })

  env = merge(local.index_env, {
    SEVENSENSE_PROFILE              = "cloud"
    SEVENSENSE_ROLE                 = "worker"
    SEVENSENSE_DEVICE               = "cpu"
    SEVENSENSE_BATCH_QUEUE_URL      = var.batch_queue_url
    SEVENSENSE_DEFERRED_QUEUE_URL   = var.deferred_queue_url
    SEVENSENSE_PAYLOAD_STORE        = var.payload_store_uri
    SEVENSENSE_INPUT_BUCKET         = var.batch_input_bucket
    SEVENSENSE_INPUT_PREFIX         = var.batch_input_prefix
    SEVENSENSE_OUTPUT_BUCKET        = var.batch_output_bucket
    SEVENSENSE_MODEL_REGISTRY_URI   = var.model_registry_uri
    SEVENSENSE_MODEL_REGISTRY_PARAM = var.model_registry_parameter_name
    SEVENSENSE_CANARY_PARAM         = var.canary_parameter_name
    SEVENSENSE_VISIBILITY_TIMEOUT_S = tostring(var.visibility_timeout_seconds)
    AWS_REGION                      = local.region
    AWS_DEFAULT_REGION              = local.region
    BENTOML_DO_NOT_TRACK            = "true"
  })

  queue_names = [var.batch_queue_name, var.deferred_queue_name]
}

resource "aws_security_group" "worker" {
  name        = "${var.name_prefix}-worker"
  description = "Worker tasks: no ingress, HTTPS to AWS endpoints only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-worker" })
}

resource "aws_vpc_security_group_egress_rule" "worker_endpoints" {
  security_group_id = aws_security_group.worker.id
  description       = "SQS, logs, SSM, KMS via interface endpoints"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "worker_s3" {
  security_group_id = aws_security_group.worker.id
  description       = "S3 buckets and ECR layers via the gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.s3_prefix_list_id
}

resource "aws_ecs_task_definition" "worker" {
  family                   = local.service
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = var.task_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib # long recordings are spooled to /tmp
  }

  volume {
    name = "scratch"
  }

  container_definitions = jsonencode([{
    name                   = "worker"
    image                  = var.image
    essential              = true
    command                = var.command
    readonlyRootFilesystem = var.readonly_root_filesystem
    user                   = var.container_user
    environment            = [for k in sort(keys(local.env)) : { name = k, value = local.env[k] }]
    mountPoints            = [{ sourceVolume = "scratch", containerPath = "/tmp", readOnly = false }]
    stopTimeout            = 120 # finish or release the current message on scale-in
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_name
        awslogs-region        = local.region
        awslogs-stream-prefix = "worker"
      }
    }
  }])

  tags = var.tags
}

# The index database's migration, run once per environment (and after bumping the app
# password) with `aws ecs run-task` in the private subnets with the worker's security
# group: the master secret in, the app role created or its password set. Only this task
# definition carries the master secret; the worker's and the entry's carry the app secret.
resource "aws_ecs_task_definition" "index_migrate" {
  count                    = var.index_migrate == null || var.index_db == null ? 0 : 1
  family                   = "${var.name_prefix}-index-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = var.execution_role_arn
  task_role_arn            = var.index_migrate.task_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  container_definitions = jsonencode([{
    name                   = "index-migrate"
    image                  = var.image
    essential              = true
    command                = ["sevensense", "index", "migrate", "--app-secret", var.index_db.secret_arn]
    readonlyRootFilesystem = var.readonly_root_filesystem
    user                   = var.container_user
    environment = [for k, v in {
      SEVENSENSE_PROFILE             = "cloud"
      SEVENSENSE_INDEX__BACKEND      = "pgvector"
      SEVENSENSE_INDEX_DB_SECRET_ARN = var.index_migrate.master_secret_arn
      AWS_REGION                     = local.region
      AWS_DEFAULT_REGION             = local.region
    } : { name = k, value = v }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_name
        awslogs-region        = local.region
        awslogs-stream-prefix = "index-migrate"
      }
    }
  }])

  tags = var.tags
}

resource "aws_ecs_service" "worker" {
  name                               = local.service
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.worker.arn
  desired_count                      = var.min_tasks
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 200
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  platform_version                   = "LATEST"

  capacity_provider_strategy {
    capacity_provider = var.use_fargate_spot ? "FARGATE_SPOT" : "FARGATE"
    weight            = 1
    base              = 0
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
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

resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.worker.name}"
  min_capacity       = var.min_tasks
  max_capacity       = var.max_tasks
}

resource "aws_appautoscaling_policy" "backlog_per_task" {
  name               = "${local.service}-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension
  resource_id        = aws_appautoscaling_target.worker.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.backlog_per_task
    scale_in_cooldown  = var.scale_in_cooldown_seconds
    scale_out_cooldown = 60

    customized_metric_specification {
      metrics {
        id          = "backlog_per_task"
        label       = "SQS backlog (visible + in flight) per running worker task"
        expression  = "IF(running > 0, (bv + bi + dv + di) / running, bv + dv)"
        return_data = true
      }

      dynamic "metrics" {
        for_each = {
          bv = { queue = var.batch_queue_name, metric = "ApproximateNumberOfMessagesVisible" }
          bi = { queue = var.batch_queue_name, metric = "ApproximateNumberOfMessagesNotVisible" }
          dv = { queue = var.deferred_queue_name, metric = "ApproximateNumberOfMessagesVisible" }
          di = { queue = var.deferred_queue_name, metric = "ApproximateNumberOfMessagesNotVisible" }
        }
        content {
          id          = metrics.key
          return_data = false
          metric_stat {
            stat = "Maximum"
            metric {
              namespace   = "AWS/SQS"
              metric_name = metrics.value.metric
              dimensions {
                name  = "QueueName"
                value = metrics.value.queue
              }
            }
          }
        }
      }

      metrics {
        id          = "running"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = var.cluster_name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.worker.name
            }
          }
        }
      }
    }
  }
}

resource "aws_appautoscaling_policy" "wake" {
  name               = "${local.service}-wake-from-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension
  resource_id        = aws_appautoscaling_target.worker.resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 120
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = 1
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "wake" {
  alarm_name          = "${local.service}-wake-from-zero"
  alarm_description   = "Work is queued while the worker service has no desired task: start one."
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.wake.arn]
  tags                = var.tags

  metric_query {
    id          = "wake"
    expression  = "IF(FILL(desired, 0) < 1 AND (FILL(bv, 0) + FILL(dv, 0)) > 0, 1, 0)"
    label       = "Worker wake-up needed"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = { bv = var.batch_queue_name, dv = var.deferred_queue_name }
    content {
      id = metric_query.key
      metric {
        namespace   = "AWS/SQS"
        metric_name = "ApproximateNumberOfMessagesVisible"
        dimensions  = { QueueName = metric_query.value }
        period      = 60
        stat        = "Maximum"
      }
    }
  }

  metric_query {
    id = "desired"
    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "DesiredTaskCount"
      dimensions  = { ClusterName = var.cluster_name, ServiceName = aws_ecs_service.worker.name }
      period      = 60
      stat        = "Maximum"
    }
  }
}
