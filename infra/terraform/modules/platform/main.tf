# The whole platform for one environment. envs/<env> only chooses values and the backend.

locals {
  name_prefix = "${var.project}-${var.environment}"
  tags = merge(var.tags, {
    Project     = var.project
    Environment = var.environment
    ManagedBy   = "terraform"
  })
  image              = "${module.registry.repository_url}:${var.image_tag}"
  model_registry_uri = "s3://${module.storage_queues.model_artifacts_bucket}/${var.model_artifacts_prefix}"

  # The tasks get the app role's secret; the master's goes only to the migration task.
  index_db = var.index_backend == "pgvector" ? {
    secret_arn        = module.index_db[0].app_secret_arn
    master_secret_arn = module.index_db[0].credentials_secret_arn
  } : null
}

module "kms" {
  source = "../kms"

  name_prefix = local.name_prefix
  tags        = local.tags
}

module "network" {
  source = "../network"

  name_prefix             = local.name_prefix
  vpc_cidr                = var.vpc_cidr
  az_count                = var.az_count
  kms_key_arn             = module.kms.key_arn
  flow_log_retention_days = var.log_retention_days
  tags                    = local.tags
}

module "registry" {
  source = "../registry"

  repository_name = "${var.project}/${var.environment}/bento"
  kms_key_arn     = module.kms.key_arn
  force_delete    = var.force_destroy
  tags            = local.tags
}

module "storage_queues" {
  source = "../storage-queues"

  name_prefix                      = local.name_prefix
  bucket_name_suffix               = var.bucket_name_suffix
  kms_key_arn                      = module.kms.key_arn
  batch_input_prefix               = var.batch_input_prefix
  batch_input_suffixes             = var.batch_input_suffixes
  batch_visibility_timeout_seconds = var.batch_visibility_timeout_seconds
  batch_max_receive_count          = var.batch_max_receive_count
  deferred_max_receive_count       = var.deferred_max_receive_count
  deferred_payload_expiration_days = var.deferred_payload_expiration_days
  force_destroy                    = var.force_destroy
  tags                             = local.tags
}

module "config" {
  source = "../config"

  name_prefix                 = local.name_prefix
  kms_key_arn                 = module.kms.key_arn
  model_registry_uri          = local.model_registry_uri
  stable_model_version        = var.stable_model_version
  secret_recovery_window_days = var.force_destroy ? 0 : 30
  tags                        = local.tags
}

module "observability" {
  source = "../observability"

  name_prefix        = local.name_prefix
  kms_key_arn        = module.kms.key_arn
  service_names      = ["entry", "model-gpu", "model-cpu", "worker"]
  log_retention_days = var.log_retention_days
  alarm_emails       = var.alarm_emails

  alb_arn_suffix                = module.serving.alb_arn_suffix
  entry_target_group_arn_suffix = module.serving.entry_target_group_arn_suffix
  cluster_name                  = module.cluster.cluster_name
  ecs_service_names             = concat(values(module.serving.service_names), [module.worker.service_name])
  gpu_capacity_provider_name    = module.cluster.gpu_capacity_provider_name

  batch_queue_name    = module.storage_queues.batch_queue_name
  batch_dlq_name      = module.storage_queues.batch_dlq_name
  deferred_queue_name = module.storage_queues.deferred_queue_name
  deferred_dlq_name   = module.storage_queues.deferred_dlq_name

  latency_p99_threshold_seconds = var.latency_p99_threshold_seconds
  tags                          = local.tags
}

module "iam" {
  source = "../iam"

  name_prefix                  = local.name_prefix
  ecr_repository_arn           = module.registry.repository_arn
  kms_key_arn                  = module.kms.key_arn
  log_group_arns               = module.observability.log_group_arns
  model_artifacts_bucket_arn   = module.storage_queues.model_artifacts_bucket_arn
  model_artifacts_prefix       = var.model_artifacts_prefix
  batch_input_bucket_arn       = module.storage_queues.batch_input_bucket_arn
  batch_input_prefix           = var.batch_input_prefix
  batch_output_bucket_arn      = module.storage_queues.batch_output_bucket_arn
  deferred_payload_prefix      = module.storage_queues.deferred_payload_prefix
  batch_queue_arn              = module.storage_queues.batch_queue_arn
  batch_dlq_arn                = module.storage_queues.batch_dlq_arn
  deferred_queue_arn           = module.storage_queues.deferred_queue_arn
  deferred_dlq_arn             = module.storage_queues.deferred_dlq_arn
  api_keys_secret_arn          = module.config.api_keys_secret_arn
  model_registry_parameter_arn = module.config.model_registry_parameter_arn
  canary_parameter_arn         = module.config.canary_parameter_arn
  index_db_secret              = local.index_db == null ? null : { arn = local.index_db.secret_arn, master_arn = local.index_db.master_secret_arn }
  tags                         = local.tags
}

module "cluster" {
  source = "../cluster"

  name_prefix               = local.name_prefix
  vpc_id                    = module.network.vpc_id
  vpc_cidr                  = module.network.vpc_cidr
  private_subnet_ids        = module.network.private_subnet_ids
  s3_prefix_list_id         = module.network.s3_prefix_list_id
  kms_key_arn               = module.kms.key_arn
  gpu_instance_profile_name = module.iam.gpu_instance_profile_name
  gpu_instance_types        = var.gpu_instance_types
  gpu_ami_id                = var.gpu_ami_id
  gpu_max_instances         = var.gpu_max_tasks
  gpu_spot_percentage       = var.gpu_spot_percentage
  log_retention_days        = var.log_retention_days
  tags                      = local.tags
}

module "serving" {
  source = "../serving"

  name_prefix = local.name_prefix
  image       = local.image

  vpc_id             = module.network.vpc_id
  vpc_cidr           = module.network.vpc_cidr
  private_subnet_ids = module.network.private_subnet_ids
  public_subnet_ids  = module.network.public_subnet_ids
  s3_prefix_list_id  = module.network.s3_prefix_list_id

  cluster_name                  = module.cluster.cluster_name
  cluster_arn                   = module.cluster.cluster_arn
  service_connect_namespace_arn = module.cluster.service_connect_namespace_arn
  gpu_capacity_provider_name    = module.cluster.gpu_capacity_provider_name

  execution_role_arn      = module.iam.execution_role_arn
  entry_task_role_arn     = module.iam.entry_task_role_arn
  model_gpu_task_role_arn = module.iam.model_gpu_task_role_arn
  model_cpu_task_role_arn = module.iam.model_cpu_task_role_arn
  log_group_names         = module.observability.log_group_names
  kms_key_arn             = module.kms.key_arn
  log_retention_days      = var.log_retention_days

  certificate_arn         = var.certificate_arn
  allowed_ingress_cidrs   = var.allowed_ingress_cidrs
  internal_alb            = var.internal_alb
  alb_deletion_protection = var.alb_deletion_protection
  access_log_bucket       = module.storage_queues.access_log_bucket

  deferred_queue_url            = module.storage_queues.deferred_queue_url
  payload_store_uri             = module.storage_queues.payload_store_uri
  api_keys_secret_arn           = module.config.api_keys_secret_arn
  model_registry_uri            = local.model_registry_uri
  model_registry_parameter_name = module.config.model_registry_parameter_name
  canary_parameter_name         = module.config.canary_parameter_name
  index_db                      = local.index_db == null ? null : { secret_arn = local.index_db.secret_arn }

  entry_min_tasks     = var.entry_min_tasks
  entry_max_tasks     = var.entry_max_tasks
  cpu_model_min_tasks = var.cpu_model_min_tasks
  cpu_model_max_tasks = var.cpu_model_max_tasks
  gpu_min_tasks       = var.gpu_min_tasks
  gpu_max_tasks       = var.gpu_max_tasks

  tags = local.tags
}

module "worker" {
  source = "../worker"

  name_prefix = local.name_prefix
  image       = local.image

  cluster_name       = module.cluster.cluster_name
  cluster_arn        = module.cluster.cluster_arn
  vpc_id             = module.network.vpc_id
  vpc_cidr           = module.network.vpc_cidr
  private_subnet_ids = module.network.private_subnet_ids
  s3_prefix_list_id  = module.network.s3_prefix_list_id

  execution_role_arn = module.iam.execution_role_arn
  task_role_arn      = module.iam.worker_task_role_arn
  log_group_name     = module.observability.log_group_names["worker"]

  batch_queue_url            = module.storage_queues.batch_queue_url
  batch_queue_name           = module.storage_queues.batch_queue_name
  deferred_queue_url         = module.storage_queues.deferred_queue_url
  deferred_queue_name        = module.storage_queues.deferred_queue_name
  payload_store_uri          = module.storage_queues.payload_store_uri
  visibility_timeout_seconds = var.batch_visibility_timeout_seconds
  batch_input_bucket         = module.storage_queues.batch_input_bucket
  batch_input_prefix         = var.batch_input_prefix
  batch_output_bucket        = module.storage_queues.batch_output_bucket

  model_registry_uri            = local.model_registry_uri
  model_registry_parameter_name = module.config.model_registry_parameter_name
  canary_parameter_name         = module.config.canary_parameter_name
  index_db                      = local.index_db == null ? null : { secret_arn = local.index_db.secret_arn }
  index_migrate = local.index_db == null ? null : {
    master_secret_arn = local.index_db.master_secret_arn
    task_role_arn     = module.iam.index_migrate_task_role_arn
  }

  min_tasks        = 0
  max_tasks        = var.worker_max_tasks
  use_fargate_spot = var.worker_use_fargate_spot
  tags             = local.tags
}

# Shared similarity-search index (pgvector), reachable only from the entry and worker
# tasks. index_backend = "hoplite" leaves it out, and with it the tasks' database
# environment and secret grant.
module "index_db" {
  source = "../index-db"
  count  = var.index_backend == "pgvector" ? 1 : 0

  name_prefix        = local.name_prefix
  vpc_id             = module.network.vpc_id
  private_subnet_ids = module.network.private_subnet_ids
  client_security_group_ids = {
    entry  = module.serving.entry_security_group_id
    worker = module.worker.security_group_id
  }
  kms_key_arn = module.kms.key_arn

  engine_version              = var.index_db_engine_version
  min_capacity                = var.index_db_min_capacity
  max_capacity                = var.index_db_max_capacity
  backup_retention_days       = var.index_db_backup_retention_days
  password_version            = var.index_db_password_version
  app_password_version        = var.index_db_app_password_version
  deletion_protection         = !var.force_destroy
  skip_final_snapshot         = var.force_destroy
  secret_recovery_window_days = var.force_destroy ? 0 : 30
  log_retention_days          = var.log_retention_days
  tags                        = local.tags
}
