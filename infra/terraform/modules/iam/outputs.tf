output "execution_role_arn" {
  description = "Task execution role (image pull, container logs)."
  value       = aws_iam_role.execution.arn
}

output "entry_task_role_arn" {
  description = "Task role of the entry service."
  value       = aws_iam_role.entry.arn
}

output "model_gpu_task_role_arn" {
  description = "Task role of the GPU model service."
  value       = aws_iam_role.model_gpu.arn
}

output "model_cpu_task_role_arn" {
  description = "Task role of the CPU fallback model service."
  value       = aws_iam_role.model_cpu.arn
}

output "worker_task_role_arn" {
  description = "Task role of the batch/deferred worker."
  value       = aws_iam_role.worker.arn
}

output "gpu_instance_profile_name" {
  description = "Instance profile of the GPU container instances."
  value       = aws_iam_instance_profile.gpu_instance.name
}

output "gpu_instance_role_name" {
  description = "Role of the GPU container instances."
  value       = aws_iam_role.gpu_instance.name
}

output "index_migrate_task_role_arn" {
  description = "Task role of the one-off index migration (null without an index database)."
  value       = length(aws_iam_role.index_migrate) == 0 ? null : aws_iam_role.index_migrate[0].arn
}
