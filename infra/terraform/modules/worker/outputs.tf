output "service_name" {
  description = "ECS service name of the worker."
  value       = aws_ecs_service.worker.name
}

output "security_group_id" {
  description = "Security group of worker tasks."
  value       = aws_security_group.worker.id
}

output "environment" {
  description = "Environment of the worker container (the app's configuration contract)."
  value       = local.env
}

output "index_migrate_task_definition_arn" {
  description = "The one-off index migration's task definition (null without an index database)."
  value       = length(aws_ecs_task_definition.index_migrate) == 0 ? null : aws_ecs_task_definition.index_migrate[0].arn
}
