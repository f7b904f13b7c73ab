# Serving: names, entry -> model wiring, GPU placement and variable validation
# (mocked AWS provider, offline).

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/sevensense-test-api/abc"
      arn_suffix = "app/sevensense-test-api/abc"
    }
  }
  mock_resource "aws_appautoscaling_policy" {
    defaults = { arn = "arn:aws:autoscaling:eu-west-1:123456789012:scalingPolicy:0000:resource/ecs/service/x:policyName/p" }
  }
  mock_resource "aws_wafv2_web_acl" {
    defaults = { arn = "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/sevensense-test-api/1111" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:aws-waf-logs-sevensense-test" }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn        = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/sevensense-test-entry/def"
      arn_suffix = "targetgroup/sevensense-test-entry/def"
    }
  }
}

variables {
  name_prefix                   = "sevensense-test"
  image                         = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sevensense/test/bento:v1.2.3"
  vpc_id                        = "vpc-1"
  vpc_cidr                      = "10.40.0.0/16"
  private_subnet_ids            = ["subnet-a", "subnet-b"]
  public_subnet_ids             = ["subnet-c", "subnet-d"]
  s3_prefix_list_id             = "pl-1"
  cluster_name                  = "sevensense-test"
  cluster_arn                   = "arn:aws:ecs:eu-west-1:123456789012:cluster/sevensense-test"
  service_connect_namespace_arn = "arn:aws:servicediscovery:eu-west-1:123456789012:namespace/ns-1"
  gpu_capacity_provider_name    = "sevensense-test-gpu"
  execution_role_arn            = "arn:aws:iam::123456789012:role/exec"
  entry_task_role_arn           = "arn:aws:iam::123456789012:role/entry"
  model_gpu_task_role_arn       = "arn:aws:iam::123456789012:role/gpu"
  model_cpu_task_role_arn       = "arn:aws:iam::123456789012:role/cpu"
  log_group_names               = { entry = "/e", "model-gpu" = "/g", "model-cpu" = "/c" }
  kms_key_arn                   = "arn:aws:kms:eu-west-1:123456789012:key/k"
  certificate_arn               = "arn:aws:acm:eu-west-1:123456789012:certificate/abc-123"
  access_log_bucket             = "logs"
  deferred_queue_url            = "https://sqs.eu-west-1.amazonaws.com/123456789012/sevensense-test-deferred-requests"
  payload_store_uri             = "s3://sevensense-test-batch-out-123456789012-eu-west-1/deferred"
  api_keys_secret_arn           = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-keys"
  model_registry_uri            = "s3://models/models/"
  model_registry_parameter_name = "/sevensense-test/model-registry-uri"
  canary_parameter_name         = "/sevensense-test/canary"
}

run "entry_reaches_models_and_queue" {
  command = plan

  assert {
    condition     = jsondecode(aws_ecs_task_definition.entry.container_definitions)[0].command[0] == "bentoml" && jsondecode(aws_ecs_task_definition.entry.container_definitions)[0].command[1] == "serve"
    error_message = "entry runs bentoml serve"
  }
  assert {
    condition = {
      for e in jsondecode(aws_ecs_task_definition.entry.container_definitions)[0].environment : e.name => e.value
      if startswith(e.name, "SEVENSENSE_")
      } == {
      SEVENSENSE_PROFILE                           = "cloud"
      SEVENSENSE_ROLE                              = "entry"
      SEVENSENSE_PORT                              = "3000"
      SEVENSENSE_GPU_URL                           = "http://model-gpu:3000"
      SEVENSENSE_CPU_URL                           = "http://model-cpu:3000"
      SEVENSENSE_DEFERRED_QUEUE_URL                = var.deferred_queue_url
      SEVENSENSE_PAYLOAD_STORE                     = var.payload_store_uri
      SEVENSENSE_API_KEYS_SECRET_ARN               = var.api_keys_secret_arn
      SEVENSENSE_MODEL_REGISTRY_URI                = var.model_registry_uri
      SEVENSENSE_MODEL_REGISTRY_PARAM              = var.model_registry_parameter_name
      SEVENSENSE_CANARY_PARAM                      = var.canary_parameter_name
      SEVENSENSE_FALLBACK__STRATEGIES              = jsonencode(["quantized_model", "cached_embedding", "deferred_queue"])
      SEVENSENSE_SERVING__SCALING_METRICS__ENABLED = "true"
      SEVENSENSE_SERVING__SCALING_METRICS__SERVICE = "sevensense-test-entry"
    }
    error_message = "entry environment contract"
  }
  assert {
    condition     = one(one(aws_ecs_service.model_gpu.service_connect_configuration).service).discovery_name == "model-gpu" && one(one(one(aws_ecs_service.model_gpu.service_connect_configuration).service).client_alias).dns_name == "model-gpu"
    error_message = "GPU model service is published as model-gpu"
  }
  assert {
    condition     = one(one(one(aws_ecs_service.model_cpu.service_connect_configuration).service).client_alias).dns_name == "model-cpu"
    error_message = "CPU model service is published as model-cpu"
  }
  assert {
    condition     = one(aws_ecs_service.model_gpu.capacity_provider_strategy).capacity_provider == "sevensense-test-gpu"
    error_message = "GPU service runs on the GPU capacity provider"
  }
  assert {
    condition     = jsondecode(aws_ecs_task_definition.model_gpu.container_definitions)[0].resourceRequirements[0].type == "GPU" && jsondecode(aws_ecs_task_definition.model_gpu.container_definitions)[0].resourceRequirements[0].value == "1"
    error_message = "one GPU per GPU task"
  }
  assert {
    condition     = one(aws_ecs_service.model_cpu.capacity_provider_strategy).capacity_provider == "FARGATE" && one(aws_ecs_service.entry.capacity_provider_strategy).capacity_provider == "FARGATE"
    error_message = "entry and CPU fallback run on Fargate"
  }
  assert {
    condition     = one(aws_lb_target_group.entry.health_check).path == "/readyz"
    error_message = "ALB health check on /readyz"
  }
  assert {
    condition     = aws_lb_listener.https.protocol == "HTTPS" && aws_lb_listener.https.certificate_arn == var.certificate_arn
    error_message = "HTTPS listener with the given certificate"
  }
  assert {
    condition     = aws_appautoscaling_target.model_gpu.min_capacity == 0
    error_message = "GPU service scales to zero by default"
  }
  assert {
    condition     = aws_appautoscaling_target.model_cpu.min_capacity == 1
    error_message = "CPU fallback keeps a task by default"
  }
}

run "autoscaling_wiring" {
  command = apply

  assert {
    condition     = one(aws_appautoscaling_policy.entry_requests.target_tracking_scaling_policy_configuration[0].predefined_metric_specification).resource_label == "app/sevensense-test-api/abc/targetgroup/sevensense-test-entry/def"
    error_message = "entry scales on its own ALB target group's request count"
  }
  assert {
    condition     = contains(aws_cloudwatch_metric_alarm.model_gpu_wake.alarm_actions, aws_appautoscaling_policy.model_gpu_wake.arn)
    error_message = "the wake-from-zero alarm triggers the GPU step policy"
  }
  assert {
    condition = {
      for name, p in {
        entry     = aws_appautoscaling_policy.entry_streams
        model_cpu = aws_appautoscaling_policy.model_cpu_queue_wait
        model_gpu = aws_appautoscaling_policy.model_gpu_queue_wait
        } : name => {
        metric    = one(p.target_tracking_scaling_policy_configuration[0].customized_metric_specification).metric_name
        namespace = one(p.target_tracking_scaling_policy_configuration[0].customized_metric_specification).namespace
        statistic = one(p.target_tracking_scaling_policy_configuration[0].customized_metric_specification).statistic
        dimension = one(p.target_tracking_scaling_policy_configuration[0].customized_metric_specification).dimensions
      }
      } == {
      entry     = { metric = "OpenStreams", namespace = "SevenSense/Serving", statistic = "Average", dimension = toset([{ name = "ServiceName", value = "sevensense-test-entry" }]) }
      model_cpu = { metric = "BatchQueueWaitMs", namespace = "SevenSense/Serving", statistic = "Average", dimension = toset([{ name = "ServiceName", value = "sevensense-test-model-cpu" }]) }
      model_gpu = { metric = "BatchQueueWaitMs", namespace = "SevenSense/Serving", statistic = "Average", dimension = toset([{ name = "ServiceName", value = "sevensense-test-model-gpu" }]) }
    }
    error_message = "entry scales on open streams per task, the model services on their batch queue wait, each on its own ServiceName"
  }
  assert {
    condition = alltrue([
      for p in [aws_appautoscaling_policy.entry_streams, aws_appautoscaling_policy.model_cpu_queue_wait, aws_appautoscaling_policy.model_gpu_queue_wait] :
      p.policy_type == "TargetTrackingScaling"
    ]) && aws_appautoscaling_policy.entry_streams.resource_id == aws_appautoscaling_target.entry.resource_id && aws_appautoscaling_policy.model_cpu_queue_wait.resource_id == aws_appautoscaling_target.model_cpu.resource_id && aws_appautoscaling_policy.model_gpu_queue_wait.resource_id == aws_appautoscaling_target.model_gpu.resource_id
    error_message = "each scaling-signal policy tracks its own service's target"
  }
  assert {
    condition = alltrue([
      for env in [
        jsondecode(aws_ecs_task_definition.model_cpu.container_definitions)[0].environment,
        jsondecode(aws_ecs_task_definition.model_gpu.container_definitions)[0].environment,
      ] : contains(env, { name = "SEVENSENSE_SERVING__SCALING_METRICS__ENABLED", value = "true" })
    ])
    error_message = "the model services publish their scaling signals"
  }
}

run "rejects_payload_store_without_prefix" {
  command = plan
  variables {
    payload_store_uri = "s3://sevensense-test-batch-out-123456789012-eu-west-1/"
  }
  expect_failures = [var.payload_store_uri]
}

run "rejects_latest_tag" {
  command = plan
  variables {
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sevensense/test/bento:latest"
  }
  expect_failures = [var.image]
}

run "rejects_untagged_image" {
  command = plan
  variables {
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sevensense/test/bento"
  }
  expect_failures = [var.image]
}

run "rejects_non_acm_certificate" {
  command = plan
  variables {
    certificate_arn = "arn:aws:iam::123456789012:server-certificate/foo"
  }
  expect_failures = [var.certificate_arn]
}

run "rejects_entry_scale_to_zero" {
  command = plan
  variables {
    entry_min_tasks = 0
  }
  expect_failures = [var.entry_min_tasks]
}

run "rejects_old_tls_policy" {
  command = plan
  variables {
    ssl_policy = "ELBSecurityPolicy-2016-08"
  }
  expect_failures = [var.ssl_policy]
}

run "rejects_long_name_prefix" {
  command = plan
  variables {
    name_prefix = "sevensense-production-eu"
  }
  expect_failures = [var.name_prefix]
}

run "rate_limits_per_key_across_the_fleet" {
  command = plan
  variables {
    waf_key_rate_limit_per_5min = 3000
  }

  assert {
    condition = (
      one({ for r in aws_wafv2_web_acl.this.rule : r.name => one(r.statement).rate_based_statement }["per-key-rate-limit-x-api-key"]).aggregate_key_type == "CUSTOM_KEYS"
      && one({ for r in aws_wafv2_web_acl.this.rule : r.name => one(r.statement).rate_based_statement }["per-key-rate-limit-x-api-key"]).limit == 3000
      && one(one(one({ for r in aws_wafv2_web_acl.this.rule : r.name => one(r.statement).rate_based_statement }["per-key-rate-limit-x-api-key"]).custom_key).header).name == "x-api-key"
      && length(one({ for r in aws_wafv2_web_acl.this.rule : r.name => r.action }["per-key-rate-limit-x-api-key"]).block) == 1
    )
    error_message = "a WAF rate-based rule blocks a key past its limit, counted on the x-api-key header across all tasks"
  }
  assert {
    condition     = one(one(one({ for r in aws_wafv2_web_acl.this.rule : r.name => one(r.statement).rate_based_statement }["per-key-rate-limit-authorization"]).custom_key).header).name == "authorization"
    error_message = "a key sent as Authorization: Bearer is counted too"
  }
  assert {
    condition     = one({ for r in aws_wafv2_web_acl.this.rule : r.name => one(r.statement).rate_based_statement }["per-ip-rate-limit"]).aggregate_key_type == "IP"
    error_message = "the per-IP rule stays for requests without a key"
  }
}

run "rejects_key_rate_limit_below_waf_minimum" {
  command = plan
  variables {
    waf_key_rate_limit_per_5min = 5
  }
  expect_failures = [var.waf_key_rate_limit_per_5min]
}

run "entry_drain_bound_matches" {
  command = plan

  assert {
    condition     = tonumber(aws_lb_target_group.entry.deregistration_delay) == 30 && jsondecode(aws_ecs_task_definition.entry.container_definitions)[0].stopTimeout == 30
    error_message = "the entry's drain bound: ALB deregistration delay and ECS stopTimeout are both 30 s"
  }
}

run "rejects_drain_beyond_ecs_stop_timeout" {
  command = plan
  variables {
    entry_drain_seconds = 300
  }
  expect_failures = [var.entry_drain_seconds]
}
