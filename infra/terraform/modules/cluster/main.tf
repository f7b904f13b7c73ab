# ECS cluster with two kinds of capacity:
#   - GPU: an Auto Scaling group of ECS GPU-optimised instances behind a capacity provider
#     with managed scaling (min 0: scales from and to zero with the GPU service's tasks);
#   - CPU: Fargate (entry, CPU fallback model service, worker).
# Plus the Service Connect namespace the entry uses to reach the model services.

# The NVIDIA driver comes with the AMI: the ECS GPU-optimised Amazon Linux 2023 AMI ships the
# 580 branch (580.178.04 in release 20261113), which CUDA 13 needs. gpu_ami_id pins one AMI.
data "aws_ssm_parameter" "gpu_ami" {
  name = var.gpu_ami_ssm_parameter
}

resource "aws_cloudwatch_log_group" "exec" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days, chosen per environment (prod 365 days, dev shorter for cost).
  name              = "/${var.name_prefix}/ecs/exec-audit"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_service_discovery_http_namespace" "this" {
  name        = var.name_prefix
  description = "Service Connect namespace of ${var.name_prefix} (entry -> model services)"
  tags        = var.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name_prefix

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  configuration {
    execute_command_configuration {
      kms_key_id = var.kms_key_arn
      logging    = "OVERRIDE"
      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.exec.name
      }
    }
  }

  service_connect_defaults {
    namespace = aws_service_discovery_http_namespace.this.arn
  }

  tags = var.tags
}

# --------------------------------------------------------------------------------------
# GPU capacity
# --------------------------------------------------------------------------------------
resource "aws_security_group" "gpu_instances" {
  name        = "${var.name_prefix}-gpu-instances"
  description = "GPU container instances (host ENI): no ingress, HTTPS to AWS endpoints only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name_prefix}-gpu-instances" })
}

resource "aws_vpc_security_group_egress_rule" "gpu_instances_endpoints" {
  security_group_id = aws_security_group.gpu_instances.id
  description       = "ECS agent, ECR, logs, SSM via interface endpoints"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "gpu_instances_s3" {
  security_group_id = aws_security_group.gpu_instances.id
  description       = "ECR image layers via the S3 gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.s3_prefix_list_id
}

resource "aws_launch_template" "gpu" {
  name_prefix   = "${var.name_prefix}-gpu-"
  image_id      = coalesce(var.gpu_ami_id, data.aws_ssm_parameter.gpu_ami.value)
  instance_type = var.gpu_instance_types[0]
  ebs_optimized = true

  iam_instance_profile {
    name = var.gpu_instance_profile_name
  }

  network_interfaces {
    associate_public_ip_address = false
    security_groups             = [aws_security_group.gpu_instances.id]
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1          # containers cannot reach IMDS
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size = var.gpu_root_volume_gib
      volume_type = "gp3"
      # Encrypted with the account's AWS-managed EBS key on purpose: a CMK here would
      # need the AutoScaling service-linked role in its key policy, and that role only
      # exists after the account's first ASG, so the key policy could not name it.
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  user_data = base64encode(<<-EOT
    #!/bin/bash
    cat >> /etc/ecs/ecs.config <<'CFG'
    ECS_CLUSTER=${var.name_prefix}
    ECS_ENABLE_GPU_SUPPORT=true
    ECS_AWSVPC_BLOCK_IMDS=true
    ECS_ENABLE_CONTAINER_METADATA=true
    ECS_CONTAINER_STOP_TIMEOUT=120s
    CFG
  EOT
  )

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name_prefix}-gpu" })
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "gpu" {
  name                  = "${var.name_prefix}-gpu"
  vpc_zone_identifier   = var.private_subnet_ids
  min_size              = 0
  max_size              = var.gpu_max_instances
  desired_capacity      = 0
  protect_from_scale_in = true # required by managed termination protection
  health_check_type     = "EC2"
  capacity_rebalance    = var.gpu_spot_percentage > 0

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = 0
      on_demand_percentage_above_base_capacity = 100 - var.gpu_spot_percentage
      spot_allocation_strategy                 = "price-capacity-optimized"
    }
    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.gpu.id
        version            = "$Latest"
      }
      dynamic "override" {
        for_each = var.gpu_instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  dynamic "tag" {
    for_each = var.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    # The capacity provider owns the desired capacity.
    ignore_changes = [desired_capacity]
  }
}

resource "aws_ecs_capacity_provider" "gpu" {
  name = "${var.name_prefix}-gpu"

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.gpu.arn
    managed_termination_protection = "ENABLED"
    managed_draining               = "ENABLED"

    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = var.gpu_target_capacity_percent
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = var.gpu_max_instances
      instance_warmup_period    = 300
    }
  }

  tags = var.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = [aws_ecs_capacity_provider.gpu.name, "FARGATE", "FARGATE_SPOT"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
    base              = 0
  }
}
