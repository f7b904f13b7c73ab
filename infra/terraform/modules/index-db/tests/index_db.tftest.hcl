# Index database: Aurora PostgreSQL Serverless v2 in the private subnets, encrypted with
# the CMK, credentials in Secrets Manager (password write-only), PostgreSQL admitted only
# from the client task groups (mocked AWS provider, offline).

mock_provider "aws" {
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_secretsmanager_random_password" {
    defaults = { random_password = "0123456789abcdefghijABCDEFGHIJ0123456789" }
  }
  mock_resource "aws_rds_cluster" {
    defaults = {
      endpoint = "sevensense-test-index.cluster-abc.eu-west-1.rds.amazonaws.com"
    }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/sevensense-test-index-monitoring" }
  }
}

variables {
  name_prefix        = "sevensense-test"
  vpc_id             = "vpc-1"
  private_subnet_ids = ["subnet-a", "subnet-b"]
  client_security_group_ids = {
    entry  = "sg-entry"
    worker = "sg-worker"
  }
  kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
}

run "serverless_v2_private_encrypted" {
  command = apply

  assert {
    condition     = aws_rds_cluster.this.engine == "aurora-postgresql" && aws_rds_cluster.this.engine_mode == "provisioned" && aws_rds_cluster.this.engine_version == "16.8"
    error_message = "Aurora PostgreSQL 16.8 (pgvector 0.8) in provisioned mode (Serverless v2)"
  }
  assert {
    condition     = aws_rds_cluster_instance.writer.instance_class == "db.serverless" && aws_rds_cluster_instance.writer.cluster_identifier == aws_rds_cluster.this.id && !aws_rds_cluster_instance.writer.publicly_accessible
    error_message = "one private db.serverless writer in the cluster"
  }
  assert {
    condition     = aws_rds_cluster.this.serverlessv2_scaling_configuration[0].min_capacity == 0.5 && aws_rds_cluster.this.serverlessv2_scaling_configuration[0].max_capacity == 8
    error_message = "capacity 0.5-8 ACU"
  }
  assert {
    condition     = aws_db_subnet_group.this.subnet_ids == toset(var.private_subnet_ids) && aws_rds_cluster.this.db_subnet_group_name == aws_db_subnet_group.this.name
    error_message = "the cluster lives in the private subnets"
  }
  assert {
    condition     = aws_rds_cluster.this.storage_encrypted && aws_rds_cluster.this.kms_key_id == var.kms_key_arn
    error_message = "storage encrypted with the CMK"
  }
  assert {
    condition     = aws_rds_cluster.this.master_password == null && aws_rds_cluster.this.master_password_wo == null && aws_rds_cluster.this.master_password_wo_version == 1 && aws_secretsmanager_secret_version.credentials.secret_string == null && aws_secretsmanager_secret_version.credentials.secret_string_wo_version == 1
    error_message = "the password goes only to write-only arguments (never in the plan), version 1"
  }
  assert {
    condition     = aws_secretsmanager_secret.credentials.kms_key_id == var.kms_key_arn && aws_secretsmanager_secret.credentials.name == "sevensense-test/index-db" && aws_secretsmanager_secret_version.credentials.secret_id == aws_secretsmanager_secret.credentials.id
    error_message = "credentials secret encrypted with the CMK"
  }
  assert {
    condition     = output.credentials_secret_arn == aws_secretsmanager_secret.credentials.arn
    error_message = "the app gets the credentials secret"
  }
  assert {
    condition = output.connection == {
      engine              = "postgres"
      host                = "sevensense-test-index.cluster-abc.eu-west-1.rds.amazonaws.com"
      port                = 5432
      dbname              = "sevensense"
      username            = "sevensense_admin"
      dbClusterIdentifier = "sevensense-test-index"
    }
    error_message = "the secret holds host, port, dbname and username (plus the password), as the app reads them"
  }
  assert {
    condition     = aws_rds_cluster.this.deletion_protection && !aws_rds_cluster.this.skip_final_snapshot && aws_rds_cluster.this.final_snapshot_identifier == "sevensense-test-index-final" && aws_rds_cluster.this.backup_retention_period == 7 && aws_rds_cluster.this.copy_tags_to_snapshot
    error_message = "deletion protection, final snapshot, 7 days of backups"
  }
  assert {
    condition     = aws_rds_cluster.this.iam_database_authentication_enabled && aws_rds_cluster.this.enabled_cloudwatch_logs_exports == toset(["postgresql"])
    error_message = "IAM auth on, PostgreSQL log exported"
  }
  assert {
    condition     = aws_cloudwatch_log_group.postgresql.name == "/aws/rds/cluster/sevensense-test-index/postgresql" && aws_cloudwatch_log_group.postgresql.kms_key_id == var.kms_key_arn
    error_message = "the export's log group exists first, encrypted with the CMK"
  }
  assert {
    condition     = aws_rds_cluster_instance.writer.performance_insights_enabled && aws_rds_cluster_instance.writer.performance_insights_kms_key_id == var.kms_key_arn && aws_rds_cluster_instance.writer.monitoring_interval == 60 && aws_rds_cluster_instance.writer.monitoring_role_arn == aws_iam_role.monitoring.arn
    error_message = "Performance Insights (CMK) and Enhanced Monitoring on the writer"
  }
  assert {
    condition     = aws_rds_cluster_parameter_group.this.family == "aurora-postgresql16" && contains([for p in aws_rds_cluster_parameter_group.this.parameter : "${p.name}=${p.value}"], "rds.force_ssl=1")
    error_message = "TLS forced by the cluster parameter group"
  }
  assert {
    condition     = aws_rds_cluster.this.vpc_security_group_ids == toset([aws_security_group.db.id])
    error_message = "the cluster has only its own security group"
  }
  assert {
    condition = tomap({
      for k, r in aws_vpc_security_group_ingress_rule.from_clients : k => r.referenced_security_group_id
      if r.security_group_id == aws_security_group.db.id && r.ip_protocol == "tcp" && r.from_port == 5432 && r.to_port == 5432 && r.cidr_ipv4 == null && r.prefix_list_id == null
    }) == var.client_security_group_ids
    error_message = "ingress: 5432 from the entry and worker groups only, no CIDR"
  }
  assert {
    condition = tomap({
      for k, r in aws_vpc_security_group_egress_rule.clients_to_db : k => r.security_group_id
      if r.referenced_security_group_id == aws_security_group.db.id && r.from_port == 5432 && r.to_port == 5432
    }) == var.client_security_group_ids
    error_message = "the client groups may reach the database's group on 5432"
  }
}

run "rejects_bad_inputs" {
  command = plan
  variables {
    engine_version     = "16.4" # pgvector < 0.8
    private_subnet_ids = ["subnet-a"]
    min_capacity       = 16
    max_capacity       = 8
  }
  expect_failures = [var.engine_version, var.private_subnet_ids, var.max_capacity]
}
