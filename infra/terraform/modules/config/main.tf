# Run-time configuration the services read (no redeploy needed to change it):
#   - partner API keys: a Secrets Manager secret (JSON {"<partner>": "<key>", ...});
#   - model registry location: an SSM String parameter (s3://<models bucket>/<prefix>);
#   - canary weights: an SSM String parameter (JSON), edited by operators with
#     `aws ssm put-parameter --overwrite`; terraform sets it once and then ignores it.

resource "aws_secretsmanager_secret" "api_keys" {
  #checkov:skip=CKV2_AWS_57:Partner API keys are issued and rotated by the partner onboarding process (a new version of this secret), not by a rotation Lambda.
  name                    = "${var.name_prefix}/api-keys"
  description             = "Partner API keys accepted by the entry service (JSON object partner -> key)."
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}

resource "aws_ssm_parameter" "model_registry_uri" {
  #checkov:skip=CKV2_AWS_34:Not a secret (an S3 URI); a plain String keeps it readable by operators and dashboards.
  name        = "/${var.name_prefix}/model-registry-uri"
  description = "Where the services find model artifacts and manifests."
  type        = "String"
  value       = var.model_registry_uri
  tags        = var.tags
}

resource "aws_ssm_parameter" "canary" {
  #checkov:skip=CKV2_AWS_34:Not a secret (model versions and traffic weights); a plain String keeps canary rollouts auditable.
  name        = "/${var.name_prefix}/canary"
  description = "Model canary: JSON {stable, canary, canary_weight}. Edit with put-parameter; terraform ignores later changes."
  type        = "String"
  value = jsonencode({
    stable        = var.stable_model_version
    canary        = var.canary_model_version
    canary_weight = var.canary_weight
  })
  tags = var.tags

  lifecycle {
    # Canary rollouts and rollbacks are operator actions on the parameter, not applies.
    ignore_changes = [value]
  }
}
