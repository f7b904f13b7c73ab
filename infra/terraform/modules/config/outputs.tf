output "api_keys_secret_arn" {
  description = "ARN of the partner API-keys secret (put the value with put-secret-value)."
  value       = aws_secretsmanager_secret.api_keys.arn
}

output "model_registry_parameter_name" {
  description = "SSM parameter holding the model registry URI."
  value       = aws_ssm_parameter.model_registry_uri.name
}

output "model_registry_parameter_arn" {
  description = "ARN of the model registry SSM parameter."
  value       = aws_ssm_parameter.model_registry_uri.arn
}

output "canary_parameter_name" {
  description = "SSM parameter holding the canary weights."
  value       = aws_ssm_parameter.canary.name
}

output "canary_parameter_arn" {
  description = "ARN of the canary SSM parameter."
  value       = aws_ssm_parameter.canary.arn
}
