output "cluster_identifier" {
  description = "Identifier of the Aurora cluster."
  value       = aws_rds_cluster.this.cluster_identifier
}

output "cluster_arn" {
  description = "ARN of the Aurora cluster."
  value       = aws_rds_cluster.this.arn
}

output "endpoint" {
  description = "Writer endpoint (host name) of the cluster."
  value       = aws_rds_cluster.this.endpoint
}

output "connection" {
  description = "What the credentials secret holds besides the password: engine, host, port, dbname, username, dbClusterIdentifier."
  value       = local.connection
}

output "credentials_secret_arn" {
  description = "The master user's secret, {engine, host, port, dbname, username, password, dbClusterIdentifier}: for `sevensense index migrate` only (the index_migrate task)."
  value       = aws_secretsmanager_secret.credentials.arn
}

output "app_secret_arn" {
  description = "The app role's secret the entry and worker tasks read (SEVENSENSE_INDEX_DB_SECRET_ARN), same JSON shape."
  value       = aws_secretsmanager_secret.app.arn
}

output "security_group_id" {
  description = "Security group of the database (ingress from the client task groups only)."
  value       = aws_security_group.db.id
}

output "log_group_name" {
  description = "CloudWatch log group of the exported PostgreSQL log."
  value       = aws_cloudwatch_log_group.postgresql.name
}

output "connection_url" {
  description = "postgresql:// URL of the database without credentials (TLS required), for operators and tools."
  value       = "postgresql://${aws_rds_cluster.this.endpoint}:${local.port}/${var.database_name}?sslmode=require"
}
