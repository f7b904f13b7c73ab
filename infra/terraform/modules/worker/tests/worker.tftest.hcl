# Worker: command, environment, scaling on SQS backlog (mocked AWS provider, offline).

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_resource "aws_appautoscaling_policy" {
    defaults = { arn = "arn:aws:autoscaling:eu-west-1:123456789012:scalingPolicy:0000:resource/ecs/service/x:policyName/p" }
  }
}

variables {
  name_prefix                   = "sevensense-test"
  image                         = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sevensense/test/bento:v1.2.3"
  cluster_name                  = "sevensense-test"
  cluster_arn                   = "arn:aws:ecs:eu-west-1:123456789012:cluster/sevensense-test"
  vpc_id                        = "vpc-1"
  vpc_cidr                      = "10.40.0.0/16"
  private_subnet_ids            = ["subnet-a", "subnet-b"]
  s3_prefix_list_id             = "pl-1"
  execution_role_arn            = "arn:aws:iam::123456789012:role/exec"
  task_role_arn                 = "arn:aws:iam::123456789012:role/worker"
  log_group_name                = "/sevensense-test/ecs/worker"
  batch_queue_url               = "https://sqs.eu-west-1.amazonaws.com/123456789012/sevensense-test-batch-jobs"
  batch_queue_name              = "sevensense-test-batch-jobs"
  deferred_queue_url            = "https://sqs.eu-west-1.amazonaws.com/123456789012/sevensense-test-deferred-requests"
  deferred_queue_name           = "sevensense-test-deferred-requests"
  payload_store_uri             = "s3://out/deferred"
  visibility_timeout_seconds    = 3600
  batch_input_bucket            = "in"
  batch_input_prefix            = "incoming/"
  batch_output_bucket           = "out"
  model_registry_uri            = "s3://models/models/"
  model_registry_parameter_name = "/sevensense-test/model-registry-uri"
  canary_parameter_name         = "/sevensense-test/canary"
}

run "worker_scales_on_backlog_from_zero" {
  command = apply

  assert {
    condition     = jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].command == ["sevensense", "worker"]
    error_message = "worker runs `sevensense worker`"
  }
  assert {
    condition = {
      for e in jsondecode(aws_ecs_task_definition.worker.container_definitions)[0].environment : e.name => e.value
      if startswith(e.name, "SEVENSENSE_")
      } == {
      SEVENSENSE_PROFILE              = "cloud"
      SEVENSENSE_ROLE                 = "worker"
      SEVENSENSE_DEVICE               = "cpu"
      SEVENSENSE_BATCH_QUEUE_URL      = var.batch_queue_url
      SEVENSENSE_DEFERRED_QUEUE_URL   = var.deferred_queue_url
      SEVENSENSE_PAYLOAD_STORE        = var.payload_store_uri
      SEVENSENSE_INPUT_BUCKET         = var.batch_input_bucket
      SEVENSENSE_INPUT_PREFIX         = var.batch_input_prefix
      SEVENSENSE_OUTPUT_BUCKET        = var.batch_output_bucket
      SEVENSENSE_MODEL_REGISTRY_URI   = var.model_registry_uri
      SEVENSENSE_MODEL_REGISTRY_PARAM = var.model_registry_parameter_name
      SEVENSENSE_CANARY_PARAM         = var.canary_parameter_name
      SEVENSENSE_VISIBILITY_TIMEOUT_S = "3600"
    }
    error_message = "worker env contract (README): queues, payload store, buckets, model config; no SEVENSENSE_OUTPUT_PREFIX (app default)"
  }
  assert {
    condition     = aws_appautoscaling_target.worker.min_capacity == 0
    error_message = "worker scales to zero"
  }
  assert {
    condition = toset(flatten([
      for m in aws_appautoscaling_policy.backlog_per_task.target_tracking_scaling_policy_configuration[0].customized_metric_specification[0].metrics : [
        for ms in m.metric_stat : [for mt in ms.metric : [for d in mt.dimensions : d.value if d.name == "QueueName"]]
      ]
    ])) == toset([var.batch_queue_name, var.deferred_queue_name])
    error_message = "target tracking reads both queues' depth"
  }
  assert {
    condition     = aws_appautoscaling_policy.backlog_per_task.target_tracking_scaling_policy_configuration[0].target_value == 10
    error_message = "backlog per task target"
  }
  assert {
    condition     = contains(aws_cloudwatch_metric_alarm.wake.alarm_actions, aws_appautoscaling_policy.wake.arn)
    error_message = "the wake-from-zero alarm triggers the step policy"
  }
}

run "rejects_payload_store_with_trailing_slash" {
  command = plan
  variables {
    payload_store_uri = "s3://out/deferred/"
  }
  expect_failures = [var.payload_store_uri]
}

run "rejects_other_command" {
  command = plan
  variables {
    command = ["bentoml", "serve"]
  }
  expect_failures = [var.command]
}

run "rejects_small_ephemeral_storage" {
  command = plan
  variables {
    ephemeral_storage_gib = 10
  }
  expect_failures = [var.ephemeral_storage_gib]
}
