output "alb_dns_name" {
  description = "DNS name of the API load balancer."
  value       = module.serving.alb_dns_name
}

output "alb_zone_id" {
  description = "Hosted zone ID of the ALB (Route 53 alias)."
  value       = module.serving.alb_zone_id
}

output "ecr_repository_url" {
  description = "Push the Bento image here."
  value       = module.registry.repository_url
}

output "image" {
  description = "Image the services run."
  value       = local.image
}

output "cluster_name" {
  description = "ECS cluster name."
  value       = module.cluster.cluster_name
}

output "service_names" {
  description = "ECS service names by role."
  value       = merge(module.serving.service_names, { worker = module.worker.service_name })
}

output "model_artifacts_bucket" {
  description = "Model artifacts bucket."
  value       = module.storage_queues.model_artifacts_bucket
}

output "model_registry_uri" {
  description = "Model registry root."
  value       = local.model_registry_uri
}

output "batch_input_bucket" {
  description = "Upload recordings here (under batch_input_prefix) to create batch jobs."
  value       = module.storage_queues.batch_input_bucket
}

output "batch_input_prefix" {
  description = "Key prefix that creates batch jobs."
  value       = var.batch_input_prefix
}

output "batch_output_bucket" {
  description = "Batch results land here."
  value       = module.storage_queues.batch_output_bucket
}

output "payload_store_uri" {
  description = "Deferred-request payload store (SEVENSENSE_PAYLOAD_STORE of entry and worker)."
  value       = module.storage_queues.payload_store_uri
}

output "batch_queue_url" {
  description = "Batch-jobs queue URL."
  value       = module.storage_queues.batch_queue_url
}

output "batch_dlq_url" {
  description = "Batch-jobs DLQ URL."
  value       = module.storage_queues.batch_dlq_url
}

output "deferred_queue_url" {
  description = "Deferred-requests queue URL."
  value       = module.storage_queues.deferred_queue_url
}

output "deferred_dlq_url" {
  description = "Deferred-requests DLQ URL."
  value       = module.storage_queues.deferred_dlq_url
}

output "api_keys_secret_arn" {
  description = "Secret holding partner API keys."
  value       = module.config.api_keys_secret_arn
}

output "model_registry_parameter_name" {
  description = "SSM parameter with the model registry URI."
  value       = module.config.model_registry_parameter_name
}

output "canary_parameter_name" {
  description = "SSM parameter with canary weights (edit it to roll a canary)."
  value       = module.config.canary_parameter_name
}

output "alarm_topic_arn" {
  description = "SNS topic of all alarms."
  value       = module.observability.alarm_topic_arn
}

output "dashboard_name" {
  description = "CloudWatch dashboard."
  value       = module.observability.dashboard_name
}

output "kms_key_arn" {
  description = "Platform CMK."
  value       = module.kms.key_arn
}

output "index_backend" {
  description = "Index backend the tasks are configured for (pgvector or hoplite)."
  value       = var.index_backend
}

output "index_db_endpoint" {
  description = "Writer endpoint of the index database (null without pgvector)."
  value       = var.index_backend == "pgvector" ? module.index_db[0].endpoint : null
}

output "index_db_secret_arn" {
  description = "The app role's secret the entry and worker tasks read, JSON {engine, host, port, dbname, username, password, dbClusterIdentifier} (null without pgvector)."
  value       = local.index_db == null ? null : local.index_db.secret_arn
}

output "index_db_master_secret_arn" {
  description = "The master user's secret, read only by the index_migrate task (null without pgvector)."
  value       = local.index_db == null ? null : local.index_db.master_secret_arn
}

output "index_migrate_task_definition_arn" {
  description = "Run once after the first apply (and after bumping the app password): aws ecs run-task in the private subnets with the worker's security group (null without pgvector)."
  value       = module.worker.index_migrate_task_definition_arn
}

output "index_db_url" {
  description = "postgresql:// URL of the index database without credentials (null without pgvector)."
  value       = var.index_backend == "pgvector" ? module.index_db[0].connection_url : null
}
