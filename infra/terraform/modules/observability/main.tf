# Log groups, alarms and the dashboard.
#
# Log groups are created here (not in the services) so the execution role can be scoped
# to their exact ARNs before any service exists. Alarms notify one encrypted SNS topic.

data "aws_region" "current" {}

locals {
  region = data.aws_region.current.name

  alb_dims = {
    LoadBalancer = var.alb_arn_suffix
    TargetGroup  = var.entry_target_group_arn_suffix
  }

  dlqs = {
    batch    = var.batch_dlq_name
    deferred = var.deferred_dlq_name
  }

  work_queues = {
    batch    = { name = var.batch_queue_name, max_age = var.batch_oldest_message_age_threshold_seconds }
    deferred = { name = var.deferred_queue_name, max_age = var.deferred_oldest_message_age_threshold_seconds }
  }
}

resource "aws_cloudwatch_log_group" "service" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days, chosen per environment (prod 365 days, dev shorter for cost).
  for_each          = toset(var.service_names)
  name              = "/${var.name_prefix}/ecs/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = merge(var.tags, { Service = each.value })
}

resource "aws_sns_topic" "alarms" {
  name              = "${var.name_prefix}-alarms"
  kms_master_key_id = var.kms_key_arn
  tags              = var.tags
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

# Anything in a DLQ is a job or request that failed maxReceiveCount times.
resource "aws_cloudwatch_metric_alarm" "dlq_depth" {
  for_each            = local.dlqs
  alarm_name          = "${var.name_prefix}-${each.key}-dlq-not-empty"
  alarm_description   = "Messages in ${each.value}: ${each.key} work failed repeatedly. Inspect, fix, then redrive."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags
}

# Work is waiting too long: workers are not keeping up (or cannot start).
resource "aws_cloudwatch_metric_alarm" "oldest_message_age" {
  for_each            = local.work_queues
  alarm_name          = "${var.name_prefix}-${each.key}-oldest-message-age"
  alarm_description   = "Oldest message in ${each.value.name} older than ${each.value.max_age}s."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = each.value.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = each.value.max_age
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags
}

# Share of requests answered with 5xx (by the targets or by the ALB itself).
resource "aws_cloudwatch_metric_alarm" "http_5xx_rate" {
  alarm_name          = "${var.name_prefix}-entry-5xx-rate"
  alarm_description   = "More than ${var.http_5xx_rate_threshold_percent}% of entry requests end in 5xx."
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  threshold           = var.http_5xx_rate_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags

  metric_query {
    id          = "rate"
    expression  = "100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests"
    label       = "5xx rate (%)"
    return_data = true
  }
  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      dimensions  = local.alb_dims
      period      = 60
      stat        = "Sum"
    }
  }
  metric_query {
    id = "target5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = local.alb_dims
      period      = 60
      stat        = "Sum"
    }
  }
  metric_query {
    id = "elb5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "latency_p99" {
  alarm_name          = "${var.name_prefix}-entry-latency-p99"
  alarm_description   = "p99 entry target response time above ${var.latency_p99_threshold_seconds}s."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = local.alb_dims
  extended_statistic  = "p99"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 4
  threshold           = var.latency_p99_threshold_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = var.tags
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name_prefix
  dashboard_body = jsonencode({
    widgets = [
      {
        type = "metric", x = 0, y = 0, width = 12, height = 6
        properties = {
          title  = "Entry requests and 5xx"
          region = local.region
          stat   = "Sum"
          period = 60
          metrics = [
            ["AWS/ApplicationELB", "RequestCount", "LoadBalancer", var.alb_arn_suffix, "TargetGroup", var.entry_target_group_arn_suffix],
            [".", "HTTPCode_Target_5XX_Count", ".", ".", ".", "."],
            [".", "HTTPCode_ELB_5XX_Count", "LoadBalancer", var.alb_arn_suffix],
          ]
        }
      },
      {
        type = "metric", x = 12, y = 0, width = 12, height = 6
        properties = {
          title  = "Entry latency (p50 / p99)"
          region = local.region
          period = 60
          metrics = [
            ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", var.alb_arn_suffix, "TargetGroup", var.entry_target_group_arn_suffix, { stat = "p50" }],
            ["...", { stat = "p99" }],
          ]
        }
      },
      {
        type = "metric", x = 0, y = 6, width = 12, height = 6
        properties = {
          title  = "Running tasks per service (GPU vs CPU fallback)"
          region = local.region
          stat   = "Average"
          period = 60
          metrics = [
            for svc in var.ecs_service_names : ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", var.cluster_name, "ServiceName", svc]
          ]
        }
      },
      {
        type = "metric", x = 12, y = 6, width = 12, height = 6
        properties = {
          title  = "GPU capacity provider reservation (%)"
          region = local.region
          stat   = "Average"
          period = 60
          metrics = [
            ["AWS/ECS/ManagedScaling", "CapacityProviderReservation", "ClusterName", var.cluster_name, "CapacityProviderName", var.gpu_capacity_provider_name],
          ]
        }
      },
      {
        type = "metric", x = 0, y = 12, width = 12, height = 6
        properties = {
          title  = "Queue depth (visible / in flight)"
          region = local.region
          stat   = "Maximum"
          period = 60
          metrics = concat(
            [for q in [var.batch_queue_name, var.deferred_queue_name] : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q]],
            [for q in [var.batch_queue_name, var.deferred_queue_name] : ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", q]],
          )
        }
      },
      {
        type = "metric", x = 12, y = 12, width = 12, height = 6
        properties = {
          title  = "Oldest message age (s) and DLQ depth"
          region = local.region
          stat   = "Maximum"
          period = 60
          metrics = concat(
            [for q in [var.batch_queue_name, var.deferred_queue_name] : ["AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", q]],
            [for q in values(local.dlqs) : ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", q]],
          )
        }
      },
    ]
  })
}
