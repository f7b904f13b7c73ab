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
