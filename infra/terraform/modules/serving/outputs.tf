output "alb_dns_name" {
  description = "DNS name of the ALB (point the API's DNS record at it)."
  value       = aws_lb.this.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the ALB (for a Route 53 alias record)."
  value       = aws_lb.this.zone_id
}

output "alb_arn_suffix" {
  description = "ARN suffix of the ALB (CloudWatch dimension)."
  value       = aws_lb.this.arn_suffix
}

output "entry_target_group_arn_suffix" {
  description = "ARN suffix of the entry target group (CloudWatch dimension)."
  value       = aws_lb_target_group.entry.arn_suffix
}

output "service_names" {
  description = "ECS service names by role."
  value = {
    entry     = aws_ecs_service.entry.name
    model_gpu = aws_ecs_service.model_gpu.name
    model_cpu = aws_ecs_service.model_cpu.name
  }
}

output "model_urls" {
  description = "Service Connect URLs the entry uses (SEVENSENSE_GPU_URL / SEVENSENSE_CPU_URL)."
  value = {
    gpu = local.entry_env.SEVENSENSE_GPU_URL
    cpu = local.entry_env.SEVENSENSE_CPU_URL
  }
}

output "entry_environment" {
  description = "Environment of the entry container (the app's configuration contract)."
  value       = local.entry_env
}

output "web_acl_arn" {
  description = "WAF web ACL protecting the ALB."
  value       = aws_wafv2_web_acl.this.arn
}

output "entry_security_group_id" {
  description = "Security group of the entry tasks (admitted by the index database)."
  value       = aws_security_group.entry.id
}
