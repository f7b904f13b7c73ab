output "cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ECS cluster ARN."
  value       = aws_ecs_cluster.this.arn
}

output "service_connect_namespace_arn" {
  description = "Service Connect (Cloud Map HTTP) namespace ARN."
  value       = aws_service_discovery_http_namespace.this.arn
}

output "gpu_capacity_provider_name" {
  description = "Capacity provider backed by the GPU Auto Scaling group."
  value       = aws_ecs_capacity_provider.gpu.name
  # Services may only use the provider once it is attached to the cluster.
  depends_on = [aws_ecs_cluster_capacity_providers.this]
}

output "gpu_autoscaling_group_name" {
  description = "GPU Auto Scaling group name."
  value       = aws_autoscaling_group.gpu.name
}
