# The shared similarity-search index (pgvector backend): Aurora PostgreSQL Serverless v2
# in the private subnets, reachable on 5432 only from the entry and worker tasks.
#
#   entry task SG --5432--> +---------------------------+
#                           | index DB SG (no egress)   |  DB subnet group: private
#   worker task SG --5432-> | Aurora PostgreSQL 16.8+   |  subnets, no internet route
#                           | writer: db.serverless     |
#                           +---------------------------+
#
# Storage, the credentials secret, Performance Insights and the log group are encrypted
# with the platform CMK. The credentials secret holds the JSON the app reads
# (SEVENSENSE_INDEX_DB_SECRET_ARN): {engine, host, port, dbname, username, password,
# dbClusterIdentifier}: the master user's, read only by the index_migrate task; the tasks
# get the app role's secret (below). The password comes from Secrets Manager's GetRandomPassword and
# goes only to write-only arguments (never in the plan); bumping password_version sets a
# new one on the cluster and in the secret in the same apply. The app runs `CREATE EXTENSION IF NOT EXISTS vector` itself (the
# master user holds rds_superuser). See README.md.

data "aws_partition" "current" {}

locals {
  identifier = "${var.name_prefix}-index"
  port       = 5432
  family     = "aurora-postgresql${split(".", var.engine_version)[0]}"
  # RDS writes exported logs here; creating the group first gives it the CMK and retention.
  log_group_name = "/aws/rds/cluster/${local.identifier}/postgresql"

  # The credentials secret is this plus the password (the shape of an RDS secret).
  connection = {
    engine              = "postgres"
    host                = aws_rds_cluster.this.endpoint
    port                = local.port
    dbname              = var.database_name
    username            = var.master_username
    dbClusterIdentifier = aws_rds_cluster.this.cluster_identifier
  }
}

# --------------------------------------------------------------------------------------
# Network: private subnets, a security group that admits only the client task groups.
# --------------------------------------------------------------------------------------
resource "aws_db_subnet_group" "this" {
  name        = local.identifier
  description = "Private subnets of ${var.name_prefix} (no internet route)"
  subnet_ids  = var.private_subnet_ids
  tags        = var.tags
}

resource "aws_security_group" "db" {
  name        = "${local.identifier}-db"
  description = "Index database: PostgreSQL from the entry and worker tasks only; no egress"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${local.identifier}-db" })
}

resource "aws_vpc_security_group_ingress_rule" "from_clients" {
  for_each                     = var.client_security_group_ids
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from ${each.key} tasks"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = each.value
}

# The client groups allow no egress beyond what their modules open; add PostgreSQL to
# this database's group only.
resource "aws_vpc_security_group_egress_rule" "clients_to_db" {
  for_each                     = var.client_security_group_ids
  security_group_id            = each.value
  description                  = "PostgreSQL to the index database"
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  referenced_security_group_id = aws_security_group.db.id
}

# --------------------------------------------------------------------------------------
# Parameters: TLS only, DDL and slow statements logged.
# --------------------------------------------------------------------------------------
resource "aws_rds_cluster_parameter_group" "this" {
  name        = "${local.identifier}-${local.family}"
  family      = local.family
  description = "Index database: TLS required, DDL and slow statements logged"
  tags        = var.tags

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = tostring(var.slow_query_ms)
  }

  lifecycle {
    create_before_destroy = true # a new engine major gets a new group before the switch
  }
}

resource "aws_cloudwatch_log_group" "postgresql" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days, chosen per environment (prod 365 days, dev shorter for cost).
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

# --------------------------------------------------------------------------------------
# Enhanced Monitoring role (RDS publishes OS metrics with it).
# --------------------------------------------------------------------------------------
data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${local.identifier}-monitoring"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

# --------------------------------------------------------------------------------------
# Credentials: a fresh random password each run, used only when password_version changes.
# A data source, not the ephemeral resource of the same name, because Terraform 1.11's
# test mocks cannot run ephemeral resources and the offline suite plans the whole
# platform with them; the state (encrypted S3) therefore holds the last value read.
# --------------------------------------------------------------------------------------
data "aws_secretsmanager_random_password" "master" {
  password_length     = 40
  exclude_punctuation = true # RDS refuses / @ " and spaces; 40 alphanumerics are ~238 bits
}

resource "aws_secretsmanager_secret" "credentials" {
  #checkov:skip=CKV2_AWS_57:Rotated by bumping password_version (one apply sets the new password on the cluster and in this secret); the JSON has the shape AWS's PostgreSQL single-user rotation function expects, so one can be attached later.
  name                    = "${var.name_prefix}/index-db"
  description             = "Index database credentials for the entry and worker tasks: JSON {engine, host, port, dbname, username, password, dbClusterIdentifier}."
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}

# The app role's secret: what the entry and worker tasks get. Same connection, the login role
# `sevensense index migrate --app-secret <this>` creates (run once, as a one-off task with
# the master secret: modules/worker's index_migrate task definition), with its own random
# password; bumping app_password_version sets a new one here, and the next migrate run
# sets it on the role (a rotation; the app re-reads the secret after a refused login).
data "aws_secretsmanager_random_password" "app" {
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "app" {
  #checkov:skip=CKV2_AWS_57:Rotated by bumping app_password_version and running the index_migrate task, which sets the new password on the role.
  name                    = "${var.name_prefix}/index-db-app"
  description             = "Index database login of the entry and worker tasks (least-privilege role made by sevensense index migrate): JSON {engine, host, port, dbname, username, password, dbClusterIdentifier}."
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "app" {
  secret_id = aws_secretsmanager_secret.app.id
  secret_string_wo = jsonencode(merge(local.connection, {
    username = var.app_username
    password = data.aws_secretsmanager_random_password.app.random_password
  }))
  secret_string_wo_version = var.app_password_version

  lifecycle {
    replace_triggered_by = [aws_rds_cluster.this.id]
  }
}

resource "aws_secretsmanager_secret_version" "credentials" {
  secret_id = aws_secretsmanager_secret.credentials.id
  secret_string_wo = jsonencode(merge(local.connection, {
    password = data.aws_secretsmanager_random_password.master.random_password
  }))
  secret_string_wo_version = var.password_version

  lifecycle {
    # A replaced cluster got this run's password and a new endpoint: write both here too.
    replace_triggered_by = [aws_rds_cluster.this.id]
  }
}

# --------------------------------------------------------------------------------------
# The cluster and its one Serverless v2 writer.
# --------------------------------------------------------------------------------------
resource "aws_rds_cluster" "this" {
  #checkov:skip=CKV2_AWS_8:Backups are the cluster's own automated backups (backup_retention_days of point-in-time recovery, snapshots copy tags); the index can also be rebuilt from stored Parquet with `sevensense index reindex`, so no separate AWS Backup plan.
  cluster_identifier = local.identifier
  engine             = "aurora-postgresql"
  engine_mode        = "provisioned" # Serverless v2 is provisioned mode with db.serverless instances
  engine_version     = var.engine_version
  database_name      = var.database_name
  port               = local.port

  master_username            = var.master_username
  master_password_wo         = data.aws_secretsmanager_random_password.master.random_password
  master_password_wo_version = var.password_version

  db_subnet_group_name            = aws_db_subnet_group.this.name
  vpc_security_group_ids          = [aws_security_group.db.id]
  db_cluster_parameter_group_name = aws_rds_cluster_parameter_group.this.name
  network_type                    = "IPV4"

  storage_encrypted                   = true
  kms_key_id                          = var.kms_key_arn
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["postgresql"]

  serverlessv2_scaling_configuration {
    min_capacity             = var.min_capacity
    max_capacity             = var.max_capacity
    seconds_until_auto_pause = var.min_capacity == 0 ? var.seconds_until_auto_pause : null
  }

  backup_retention_period      = var.backup_retention_days
  preferred_backup_window      = "02:00-03:00"
  preferred_maintenance_window = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot        = true
  deletion_protection          = var.deletion_protection
  skip_final_snapshot          = var.skip_final_snapshot
  final_snapshot_identifier    = var.skip_final_snapshot ? null : "${local.identifier}-final"
  apply_immediately            = false

  tags = var.tags

  depends_on = [aws_cloudwatch_log_group.postgresql]
}

resource "aws_rds_cluster_instance" "writer" {
  identifier         = "${local.identifier}-writer"
  cluster_identifier = aws_rds_cluster.this.id
  instance_class     = "db.serverless"
  engine             = aws_rds_cluster.this.engine # version: the cluster's

  publicly_accessible        = false
  auto_minor_version_upgrade = true
  ca_cert_identifier         = "rds-ca-rsa2048-g1"
  promotion_tier             = 0

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = var.performance_insights_retention_days
  monitoring_interval                   = var.monitoring_interval_seconds
  monitoring_role_arn                   = aws_iam_role.monitoring.arn

  apply_immediately = false
  tags              = var.tags

  depends_on = [aws_iam_role_policy_attachment.monitoring]
}
