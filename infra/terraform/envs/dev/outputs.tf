output "alb_dns_name" {
  description = "DNS name of the API load balancer (CNAME/alias your API host name to it)."
  value       = module.platform.alb_dns_name
}

output "ecr_repository_url" {
  description = "ECR repository to push the Bento image to."
  value       = module.platform.ecr_repository_url
}

output "image" {
  description = "Image reference the services run."
  value       = module.platform.image
}

output "cluster_name" {
  description = "ECS cluster."
  value       = module.platform.cluster_name
}

output "service_names" {
  description = "ECS services by role (entry, model_gpu, model_cpu, worker)."
  value       = module.platform.service_names
}

output "model_artifacts_bucket" {
  description = "Model artifacts bucket (upload models under models/)."
  value       = module.platform.model_artifacts_bucket
}

output "batch_input_bucket" {
  description = "Batch input bucket."
  value       = module.platform.batch_input_bucket
}

output "batch_input_prefix" {
  description = "Prefix that triggers batch jobs."
  value       = module.platform.batch_input_prefix
}

output "batch_output_bucket" {
  description = "Batch output bucket."
  value       = module.platform.batch_output_bucket
}

output "payload_store_uri" {
  description = "Deferred-request payload store (s3://<batch output bucket>/deferred)."
  value       = module.platform.payload_store_uri
}

output "batch_queue_url" {
  description = "Batch-jobs queue."
  value       = module.platform.batch_queue_url
}

output "batch_dlq_url" {
  description = "Batch-jobs DLQ."
  value       = module.platform.batch_dlq_url
}

output "deferred_queue_url" {
  description = "Deferred-requests queue."
  value       = module.platform.deferred_queue_url
}

output "deferred_dlq_url" {
  description = "Deferred-requests DLQ."
  value       = module.platform.deferred_dlq_url
}

output "api_keys_secret_arn" {
  description = "Secret with partner API keys."
  value       = module.platform.api_keys_secret_arn
}

output "model_registry_parameter_name" {
  description = "SSM parameter with the model registry URI."
  value       = module.platform.model_registry_parameter_name
}

output "canary_parameter_name" {
  description = "SSM parameter with the canary weights."
  value       = module.platform.canary_parameter_name
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = module.platform.alarm_topic_arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard."
  value       = module.platform.dashboard_name
}

output "index_db_endpoint" {
  description = "Writer endpoint of the pgvector index database (null with index_backend = \"hoplite\")."
  value       = module.platform.index_db_endpoint
}

output "index_db_secret_arn" {
  description = "Secret with the index database's connection JSON (SEVENSENSE_INDEX_DB_SECRET_ARN of the entry and worker)."
  value       = module.platform.index_db_secret_arn
}

output "index_db_url" {
  description = "postgresql:// URL of the index database without credentials (operators, tools)."
  value       = module.platform.index_db_url
}
