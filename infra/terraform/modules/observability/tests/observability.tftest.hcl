# Log groups, alarms and dashboard (mocked AWS provider, offline).

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
}

variables {
  name_prefix                   = "sevensense-test"
  kms_key_arn                   = "arn:aws:kms:eu-west-1:123456789012:key/k"
  alb_arn_suffix                = "app/sevensense-test-api/abc"
  entry_target_group_arn_suffix = "targetgroup/sevensense-test-entry/def"
  cluster_name                  = "sevensense-test"
  ecs_service_names             = ["sevensense-test-entry", "sevensense-test-model-gpu", "sevensense-test-model-cpu", "sevensense-test-worker"]
  gpu_capacity_provider_name    = "sevensense-test-gpu"
  batch_queue_name              = "sevensense-test-batch-jobs"
  batch_dlq_name                = "sevensense-test-batch-jobs-dlq"
  deferred_queue_name           = "sevensense-test-deferred-requests"
  deferred_dlq_name             = "sevensense-test-deferred-requests-dlq"
}

run "alarms_watch_the_right_things" {
  command = plan

  assert {
    condition     = toset(keys(aws_cloudwatch_log_group.service)) == toset(["entry", "model-gpu", "model-cpu", "worker"]) && aws_cloudwatch_log_group.service["entry"].name == "/sevensense-test/ecs/entry"
    error_message = "one encrypted log group per service"
  }
  assert {
    condition     = alltrue([for lg in aws_cloudwatch_log_group.service : lg.retention_in_days == 365 && lg.kms_key_id == var.kms_key_arn])
    error_message = "retention and encryption on every log group"
  }
  assert {
    condition     = toset([for a in aws_cloudwatch_metric_alarm.dlq_depth : a.dimensions.QueueName]) == toset([var.batch_dlq_name, var.deferred_dlq_name])
    error_message = "DLQ depth alarms on both DLQs"
  }
  assert {
    condition     = alltrue([for a in aws_cloudwatch_metric_alarm.dlq_depth : a.threshold == 0 && a.comparison_operator == "GreaterThanThreshold"])
    error_message = "any message in a DLQ alarms"
  }
  assert {
    condition     = toset([for a in aws_cloudwatch_metric_alarm.oldest_message_age : a.dimensions.QueueName]) == toset([var.batch_queue_name, var.deferred_queue_name]) && alltrue([for a in aws_cloudwatch_metric_alarm.oldest_message_age : a.metric_name == "ApproximateAgeOfOldestMessage"])
    error_message = "oldest-message-age alarms on both work queues"
  }
  assert {
    condition     = anytrue([for q in aws_cloudwatch_metric_alarm.http_5xx_rate.metric_query : q.return_data == true && strcontains(q.expression == null ? "" : q.expression, "requests")])
    error_message = "5xx alarm is a rate (5xx / requests)"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.latency_p99.extended_statistic == "p99" && aws_cloudwatch_metric_alarm.latency_p99.dimensions.TargetGroup == var.entry_target_group_arn_suffix
    error_message = "p99 latency alarm on the entry target group"
  }
  assert {
    condition     = length(jsondecode(aws_cloudwatch_dashboard.this.dashboard_body).widgets) == 6
    error_message = "dashboard widgets"
  }
}

run "rejects_bad_retention" {
  command = plan
  variables {
    log_retention_days = 10
  }
  expect_failures = [var.log_retention_days]
}

run "rejects_bad_email" {
  command = plan
  variables {
    alarm_emails = ["not-an-address"]
  }
  expect_failures = [var.alarm_emails]
}
