output "log_group_names" {
  description = "Log group name per service."
  value       = { for k, v in aws_cloudwatch_log_group.service : k => v.name }
}

output "log_group_arns" {
  description = "Log group ARN per service."
  value       = { for k, v in aws_cloudwatch_log_group.service : k => v.arn }
}

output "alarm_topic_arn" {
  description = "SNS topic that receives every alarm."
  value       = aws_sns_topic.alarms.arn
}

output "alarm_names" {
  description = "Names of the alarms."
  value = concat(
    [for a in aws_cloudwatch_metric_alarm.dlq_depth : a.alarm_name],
    [for a in aws_cloudwatch_metric_alarm.oldest_message_age : a.alarm_name],
    [aws_cloudwatch_metric_alarm.http_5xx_rate.alarm_name, aws_cloudwatch_metric_alarm.latency_p99.alarm_name],
  )
}

output "dashboard_name" {
  description = "CloudWatch dashboard name."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}
