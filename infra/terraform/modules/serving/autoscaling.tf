# Service autoscaling.
#
# entry      : target tracking on ALB requests per target, and on open WebSocket streams
#              per task (a stream holds a connection for minutes and is one request).
# model-cpu  : target tracking on average CPU (the CPU model path is CPU-bound), on the
#              mean time a window waits for its batch, and on the windows pending per
#              worker (BentoML's queue depth, counted by our code: it rises as soon as
#              windows queue, before any of them has finished waiting).
# model-gpu  : target tracking on the mean batch queue wait, on the pending windows per
#              task, and on entry requests per
#              running GPU task (all requests
#              while no GPU task runs yet, so a pending task is not scaled away), plus a
#              "wake from zero" step policy: while the GPU service has 0 desired tasks
#              and the entry receives requests, add one task. The capacity provider then
#              launches a GPU instance (managed scaling scales the ASG from zero). Until
#              it is ready the CPU fallback serves. With no requests, target tracking
#              scales the GPU service in to gpu_min_tasks (0 by default) and the
#              capacity provider terminates the idle instances.

locals {
  alb_label = "${aws_lb.this.arn_suffix}/${aws_lb_target_group.entry.arn_suffix}"

  # The metrics the services publish themselves as CloudWatch EMF on stdout. One source of
  # truth: service/sevensense/serving/telemetry/scaling.py (tests/infra asserts they match).
  scaling = {
    namespace         = "SevenSense/Serving"
    service_dimension = "ServiceName"
    open_streams      = "OpenStreams"
    queue_wait        = "BatchQueueWaitMs"
    pending_windows   = "PendingWindows"
  }
}

resource "aws_appautoscaling_target" "entry" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.entry.name}"
  min_capacity       = var.entry_min_tasks
  max_capacity       = var.entry_max_tasks
}

resource "aws_appautoscaling_policy" "entry_requests" {
  name               = "${local.services.entry}-requests-per-target"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.entry.service_namespace
  scalable_dimension = aws_appautoscaling_target.entry.scalable_dimension
  resource_id        = aws_appautoscaling_target.entry.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.entry_requests_per_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = local.alb_label
    }
  }
}

resource "aws_appautoscaling_policy" "entry_streams" {
  name               = "${local.services.entry}-open-streams-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.entry.service_namespace
  scalable_dimension = aws_appautoscaling_target.entry.scalable_dimension
  resource_id        = aws_appautoscaling_target.entry.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.entry_open_streams_per_task
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    customized_metric_specification {
      namespace   = local.scaling.namespace
      metric_name = local.scaling.open_streams
      statistic   = "Average"
      dimensions {
        name  = local.scaling.service_dimension
        value = local.services.entry
      }
    }
  }
}

resource "aws_appautoscaling_target" "model_cpu" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.model_cpu.name}"
  min_capacity       = var.cpu_model_min_tasks
  max_capacity       = var.cpu_model_max_tasks
}

resource "aws_appautoscaling_policy" "model_cpu_cpu" {
  name               = "${local.services.model_cpu}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.model_cpu.service_namespace
  scalable_dimension = aws_appautoscaling_target.model_cpu.scalable_dimension
  resource_id        = aws_appautoscaling_target.model_cpu.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_model_cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "model_cpu_queue_wait" {
  name               = "${local.services.model_cpu}-batch-queue-wait"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.model_cpu.service_namespace
  scalable_dimension = aws_appautoscaling_target.model_cpu.scalable_dimension
  resource_id        = aws_appautoscaling_target.model_cpu.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_model_queue_wait_ms
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    customized_metric_specification {
      namespace   = local.scaling.namespace
      metric_name = local.scaling.queue_wait
      statistic   = "Average"
      dimensions {
        name  = local.scaling.service_dimension
        value = local.services.model_cpu
      }
    }
  }
}

resource "aws_appautoscaling_policy" "model_cpu_pending" {
  name               = "${local.services.model_cpu}-pending-windows"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.model_cpu.service_namespace
  scalable_dimension = aws_appautoscaling_target.model_cpu.scalable_dimension
  resource_id        = aws_appautoscaling_target.model_cpu.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_model_pending_windows
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    customized_metric_specification {
      namespace   = local.scaling.namespace
      metric_name = local.scaling.pending_windows
      statistic   = "Average"
      dimensions {
        name  = local.scaling.service_dimension
        value = local.services.model_cpu
      }
    }
  }
}

resource "aws_appautoscaling_target" "model_gpu" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.model_gpu.name}"
  min_capacity       = var.gpu_min_tasks
  max_capacity       = var.gpu_max_tasks
}

resource "aws_appautoscaling_policy" "model_gpu_requests" {
  name               = "${local.services.model_gpu}-requests-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.model_gpu.service_namespace
  scalable_dimension = aws_appautoscaling_target.model_gpu.scalable_dimension
  resource_id        = aws_appautoscaling_target.model_gpu.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.gpu_requests_per_task_per_minute
    scale_in_cooldown  = var.gpu_scale_in_cooldown_seconds
    scale_out_cooldown = 120

    customized_metric_specification {
      metrics {
        id          = "per_task"
        label       = "Entry requests per running GPU task (per minute)"
        expression  = "IF(running > 0, requests / running, requests)"
        return_data = true
      }
      metrics {
        id          = "requests"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/ApplicationELB"
            metric_name = "RequestCount"
            dimensions {
              name  = "LoadBalancer"
              value = aws_lb.this.arn_suffix
            }
            dimensions {
              name  = "TargetGroup"
              value = aws_lb_target_group.entry.arn_suffix
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
              value = aws_ecs_service.model_gpu.name
            }
          }
        }
      }
    }
  }
}

resource "aws_appautoscaling_policy" "model_gpu_queue_wait" {
  name               = "${local.services.model_gpu}-batch-queue-wait"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.model_gpu.service_namespace
  scalable_dimension = aws_appautoscaling_target.model_gpu.scalable_dimension
  resource_id        = aws_appautoscaling_target.model_gpu.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.gpu_queue_wait_ms
    scale_in_cooldown  = var.gpu_scale_in_cooldown_seconds
    scale_out_cooldown = 120
    customized_metric_specification {
      namespace   = local.scaling.namespace
      metric_name = local.scaling.queue_wait
      statistic   = "Average"
      dimensions {
        name  = local.scaling.service_dimension
        value = local.services.model_gpu
      }
    }
  }
}

resource "aws_appautoscaling_policy" "model_gpu_pending" {
  name               = "${local.services.model_gpu}-pending-windows"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.model_gpu.service_namespace
  scalable_dimension = aws_appautoscaling_target.model_gpu.scalable_dimension
  resource_id        = aws_appautoscaling_target.model_gpu.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.gpu_pending_windows
    scale_in_cooldown  = var.gpu_scale_in_cooldown_seconds
    scale_out_cooldown = 120
    customized_metric_specification {
      namespace   = local.scaling.namespace
      metric_name = local.scaling.pending_windows
      statistic   = "Average"
      dimensions {
        name  = local.scaling.service_dimension
        value = local.services.model_gpu
      }
    }
  }
}

resource "aws_appautoscaling_policy" "model_gpu_wake" {
  name               = "${local.services.model_gpu}-wake-from-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.model_gpu.service_namespace
  scalable_dimension = aws_appautoscaling_target.model_gpu.scalable_dimension
  resource_id        = aws_appautoscaling_target.model_gpu.resource_id

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 300
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = 1
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "model_gpu_wake" {
  alarm_name          = "${local.services.model_gpu}-wake-from-zero"
  alarm_description   = "Entry has traffic while the GPU service has no desired task: start one (CPU fallback serves meanwhile)."
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.model_gpu_wake.arn]
  tags                = var.tags

  metric_query {
    id          = "wake"
    expression  = "IF(FILL(desired, 0) < 1 AND FILL(requests, 0) > 0, 1, 0)"
    label       = "GPU wake-up needed"
    return_data = true
  }
  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      dimensions  = { LoadBalancer = aws_lb.this.arn_suffix, TargetGroup = aws_lb_target_group.entry.arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }
  metric_query {
    id = "desired"
    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "DesiredTaskCount"
      dimensions  = { ClusterName = var.cluster_name, ServiceName = aws_ecs_service.model_gpu.name }
      period      = 60
      stat        = "Maximum"
    }
  }
}
