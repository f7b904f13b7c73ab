# Least privilege of the task roles, with a mocked AWS provider (offline).

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  name_prefix                  = "sevensense-test"
  ecr_repository_arn           = "arn:aws:ecr:eu-west-1:123456789012:repository/sevensense/test/bento"
  kms_key_arn                  = "arn:aws:kms:eu-west-1:123456789012:key/k"
  log_group_arns               = { entry = "arn:aws:logs:eu-west-1:123456789012:log-group:/sevensense-test/ecs/entry" }
  model_artifacts_bucket_arn   = "arn:aws:s3:::models-bucket"
  batch_input_bucket_arn       = "arn:aws:s3:::input-bucket"
  batch_input_prefix           = "incoming/"
  batch_output_bucket_arn      = "arn:aws:s3:::output-bucket"
  batch_queue_arn              = "arn:aws:sqs:eu-west-1:123456789012:batch"
  batch_dlq_arn                = "arn:aws:sqs:eu-west-1:123456789012:batch-dlq"
  deferred_queue_arn           = "arn:aws:sqs:eu-west-1:123456789012:deferred"
  deferred_dlq_arn             = "arn:aws:sqs:eu-west-1:123456789012:deferred-dlq"
  api_keys_secret_arn          = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-keys"
  model_registry_parameter_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/registry"
  canary_parameter_arn         = "arn:aws:ssm:eu-west-1:123456789012:parameter/canary"
}

run "least_privilege" {
  command = plan

  assert {
    condition     = aws_iam_role.entry.name == "sevensense-test-entry-task" && aws_iam_role.worker.name == "sevensense-test-worker-task"
    error_message = "role names"
  }
  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.entry.statement : s.resources])) == toset([var.deferred_queue_arn, "arn:aws:s3:::output-bucket/deferred/*", "arn:aws:s3:::output-bucket", var.api_keys_secret_arn, var.canary_parameter_arn, var.kms_key_arn])
    error_message = "entry reaches exactly the deferred queue, the payload store, the API-keys secret, the canary parameter and the key"
  }
  assert {
    condition = alltrue([
      for s in data.aws_iam_policy_document.entry.statement : toset(s.actions) == toset(["s3:ListBucket"]) && length(s.condition) == 1 && one(s.condition).test == "StringLike" && one(s.condition).variable == "s3:prefix" && toset(one(s.condition).values) == toset(["deferred/*"])
      if contains(s.resources, "arn:aws:s3:::output-bucket")
    ])
    error_message = "the entry lists the output bucket only under the payload-store prefix (404 for unknown job ids)"
  }
  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.entry.statement : s.actions if contains(s.resources, var.deferred_queue_arn)])) == toset(["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"])
    error_message = "entry may only send to the deferred queue (and read its redrive policy)"
  }
  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.entry.statement : s.actions if contains(s.resources, "arn:aws:s3:::output-bucket/deferred/*")])) == toset(["s3:PutObject", "s3:GetObject"]) && alltrue([for s in data.aws_iam_policy_document.entry.statement : anytrue([for r in s.resources : startswith(r, "arn:aws:s3:::output-bucket/deferred/")]) if anytrue([for a in s.actions : contains(["s3:PutObject", "s3:GetObject", "s3:DeleteObject"], a)])])
    error_message = "entry reads and writes objects only under the payload-store prefix of the output bucket"
  }
  assert {
    condition = toset(flatten([for s in data.aws_iam_policy_document.worker.statement : s.resources])) == toset([
      var.batch_queue_arn, var.deferred_queue_arn, var.batch_dlq_arn, var.deferred_dlq_arn,
      "arn:aws:s3:::input-bucket/incoming/*", "arn:aws:s3:::output-bucket/*", "arn:aws:s3:::output-bucket/deferred/*", "arn:aws:s3:::output-bucket",
      "arn:aws:s3:::models-bucket/models/*", "arn:aws:s3:::models-bucket",
      var.model_registry_parameter_arn, var.canary_parameter_arn, var.kms_key_arn,
    ])
    error_message = "worker reaches exactly its queues, DLQs, bucket prefixes, parameters and key"
  }
  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.worker.statement : s.actions if contains(s.resources, var.batch_dlq_arn) || contains(s.resources, var.deferred_dlq_arn)])) == toset(["sqs:SendMessage", "sqs:GetQueueUrl"]) && alltrue([for s in data.aws_iam_policy_document.worker.statement : contains(s.resources, var.batch_dlq_arn) && contains(s.resources, var.deferred_dlq_arn) if contains(s.actions, "sqs:SendMessage")])
    error_message = "the worker sends to both DLQs (dead-lettering with a reason) and does nothing else there"
  }
  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.worker.statement : s.actions if contains(s.resources, "arn:aws:s3:::output-bucket/deferred/*")])) == toset(["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
    error_message = "the worker reads, updates and deletes in the payload store"
  }
  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.worker.statement : s.resources if contains(s.actions, "s3:DeleteObject")])) == toset(["arn:aws:s3:::output-bucket/deferred/*"])
    error_message = "the worker deletes nothing outside the payload store"
  }
  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.model.statement : s.resources])) == toset(["arn:aws:s3:::models-bucket/models/*", "arn:aws:s3:::models-bucket", var.model_registry_parameter_arn, var.canary_parameter_arn, var.kms_key_arn])
    error_message = "model services reach exactly the model artifacts, their parameters and the key"
  }
  assert {
    condition     = alltrue([for s in data.aws_iam_policy_document.model.statement : !contains(s.actions, "s3:PutObject")])
    error_message = "model services cannot write"
  }
  assert {
    condition     = length([for s in data.aws_iam_policy_document.execution.statement : s if contains(s.resources, "*")]) == 1 && alltrue([for s in data.aws_iam_policy_document.execution.statement : toset(s.actions) == toset(["ecr:GetAuthorizationToken"]) if contains(s.resources, "*")])
    error_message = "the only Resource * is ecr:GetAuthorizationToken"
  }
  assert {
    condition     = alltrue([for d in [data.aws_iam_policy_document.entry, data.aws_iam_policy_document.model, data.aws_iam_policy_document.worker, data.aws_iam_policy_document.execution] : alltrue([for s in d.statement : alltrue([for a in s.actions : !strcontains(a, "*")])])])
    error_message = "no wildcard actions"
  }
  assert {
    condition     = aws_iam_role.model_gpu.name != aws_iam_role.model_cpu.name
    error_message = "GPU and CPU model services have separate roles"
  }
}

run "rejects_empty_model_prefix" {
  command = plan
  variables {
    model_artifacts_prefix = ""
  }
  expect_failures = [var.model_artifacts_prefix]
}

run "rejects_empty_input_prefix" {
  command = plan
  variables {
    batch_input_prefix = ""
  }
  expect_failures = [var.batch_input_prefix]
}

run "custom_payload_prefix" {
  command = plan
  variables {
    deferred_payload_prefix = "jobs-store/"
  }
  assert {
    condition     = toset(flatten([for s in data.aws_iam_policy_document.entry.statement : s.resources if contains(s.actions, "s3:PutObject")])) == toset(["arn:aws:s3:::output-bucket/jobs-store/*"])
    error_message = "the payload-store grant follows deferred_payload_prefix"
  }
}

run "rejects_empty_payload_prefix" {
  command = plan
  variables {
    deferred_payload_prefix = ""
  }
  expect_failures = [var.deferred_payload_prefix]
}

run "rejects_wildcard_log_group" {
  command = plan
  variables {
    log_group_arns = { entry = "arn:aws:logs:eu-west-1:123456789012:log-group:*" }
  }
  expect_failures = [var.log_group_arns]
}
