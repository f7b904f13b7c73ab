output "access_log_bucket" {
  description = "Name of the access-log bucket (S3 server access logs under s3/, ALB logs under alb/)."
  # From the policy resource: an ALB checks that it may write its logs when it is
  # created, so consumers must wait for the bucket policy, not just the bucket.
  value = aws_s3_bucket_policy.access_logs.bucket
}

output "model_artifacts_bucket" {
  description = "Name of the model artifacts bucket."
  value       = module.model_artifacts.id
}

output "model_artifacts_bucket_arn" {
  description = "ARN of the model artifacts bucket."
  value       = module.model_artifacts.arn
}

output "batch_input_bucket" {
  description = "Name of the batch input bucket (upload recordings under batch_input_prefix)."
  value       = module.batch_input.id
}

output "batch_input_bucket_arn" {
  description = "ARN of the batch input bucket."
  value       = module.batch_input.arn
}

output "batch_output_bucket" {
  description = "Name of the batch output bucket."
  value       = module.batch_output.id
}

output "batch_output_bucket_arn" {
  description = "ARN of the batch output bucket."
  value       = module.batch_output.arn
}

output "deferred_payload_prefix" {
  description = "Key prefix of the deferred-request payload store in the batch output bucket."
  value       = var.deferred_payload_prefix
}

output "payload_store_uri" {
  description = "Deferred-request payload store, s3://<batch output bucket>/<prefix without trailing slash> (SEVENSENSE_PAYLOAD_STORE)."
  value       = "s3://${module.batch_output.id}/${trimsuffix(var.deferred_payload_prefix, "/")}"
}

output "batch_input_prefix" {
  description = "Key prefix that triggers batch jobs."
  value       = var.batch_input_prefix
}

output "batch_queue_url" {
  description = "URL of the batch-jobs queue."
  value       = aws_sqs_queue.batch.id
}

output "batch_queue_arn" {
  description = "ARN of the batch-jobs queue."
  value       = aws_sqs_queue.batch.arn
}

output "batch_queue_name" {
  description = "Name of the batch-jobs queue."
  value       = aws_sqs_queue.batch.name
}

output "batch_dlq_url" {
  description = "URL of the batch-jobs dead-letter queue."
  value       = aws_sqs_queue.batch_dlq.id
}

output "batch_dlq_arn" {
  description = "ARN of the batch-jobs dead-letter queue."
  value       = aws_sqs_queue.batch_dlq.arn
}

output "batch_dlq_name" {
  description = "Name of the batch-jobs dead-letter queue."
  value       = aws_sqs_queue.batch_dlq.name
}

output "deferred_queue_url" {
  description = "URL of the deferred-requests queue."
  value       = aws_sqs_queue.deferred.id
}

output "deferred_queue_arn" {
  description = "ARN of the deferred-requests queue."
  value       = aws_sqs_queue.deferred.arn
}

output "deferred_queue_name" {
  description = "Name of the deferred-requests queue."
  value       = aws_sqs_queue.deferred.name
}

output "deferred_dlq_url" {
  description = "URL of the deferred-requests dead-letter queue."
  value       = aws_sqs_queue.deferred_dlq.id
}

output "deferred_dlq_arn" {
  description = "ARN of the deferred-requests dead-letter queue."
  value       = aws_sqs_queue.deferred_dlq.arn
}

output "deferred_dlq_name" {
  description = "Name of the deferred-requests dead-letter queue."
  value       = aws_sqs_queue.deferred_dlq.name
}
