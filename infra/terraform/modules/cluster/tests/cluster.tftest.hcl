# GPU capacity (mocked AWS provider, offline).

mock_provider "aws" {
  mock_data "aws_ssm_parameter" {
    defaults = { value = "ami-0123456789abcdef0" }
  }
  mock_resource "aws_service_discovery_http_namespace" {
    defaults = { arn = "arn:aws:servicediscovery:eu-west-1:123456789012:namespace/ns-1" }
  }
  mock_resource "aws_autoscaling_group" {
    defaults = { arn = "arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:1111:autoScalingGroupName/sevensense-test-gpu" }
  }
}

variables {
  name_prefix               = "sevensense-test"
  vpc_id                    = "vpc-1"
  vpc_cidr                  = "10.40.0.0/16"
  private_subnet_ids        = ["subnet-a", "subnet-b"]
  s3_prefix_list_id         = "pl-1"
  kms_key_arn               = "arn:aws:kms:eu-west-1:123456789012:key/k"
  gpu_instance_profile_name = "sevensense-test-gpu-instance"
}

run "gpu_capacity_scales_from_zero" {
  command = apply

  assert {
    condition     = aws_autoscaling_group.gpu.min_size == 0 && aws_autoscaling_group.gpu.protect_from_scale_in
    error_message = "GPU ASG starts at zero and is protected for managed termination"
  }
  assert {
    condition     = aws_ecs_capacity_provider.gpu.auto_scaling_group_provider[0].managed_scaling[0].status == "ENABLED"
    error_message = "managed scaling on the GPU capacity provider"
  }
  assert {
    condition     = aws_ecs_capacity_provider.gpu.auto_scaling_group_provider[0].auto_scaling_group_arn == aws_autoscaling_group.gpu.arn
    error_message = "capacity provider is backed by the GPU ASG"
  }
  assert {
    condition     = toset([for o in aws_autoscaling_group.gpu.mixed_instances_policy[0].launch_template[0].override : o.instance_type]) == toset(var.gpu_instance_types)
    error_message = "instance types come from the variable"
  }
  assert {
    condition     = data.aws_ssm_parameter.gpu_ami.name == "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id" && aws_launch_template.gpu.image_id == "ami-0123456789abcdef0"
    error_message = "AMI from the ECS GPU-optimised Amazon Linux 2023 SSM parameter (NVIDIA 580 driver)"
  }
  assert {
    condition     = aws_launch_template.gpu.metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 only"
  }
  assert {
    condition     = contains(aws_ecs_cluster_capacity_providers.this.capacity_providers, "FARGATE") && contains(aws_ecs_cluster_capacity_providers.this.capacity_providers, aws_ecs_capacity_provider.gpu.name)
    error_message = "cluster has GPU and Fargate capacity"
  }
}

run "rejects_non_gpu_instance_type" {
  command = plan
  variables {
    gpu_instance_types = ["m5.xlarge"]
  }
  expect_failures = [var.gpu_instance_types]
}

run "pinned_gpu_ami" {
  command = plan
  variables {
    gpu_ami_id = "ami-0fedcba9876543210"
  }
  assert {
    condition     = aws_launch_template.gpu.image_id == "ami-0fedcba9876543210"
    error_message = "gpu_ami_id pins the AMI over the SSM parameter"
  }
}

run "rejects_amazon_linux_2_gpu_ami" {
  command = plan
  variables {
    gpu_ami_ssm_parameter = "/aws/service/ecs/optimized-ami/amazon-linux-2/gpu/recommended/image_id"
  }
  expect_failures = [var.gpu_ami_ssm_parameter]
}

run "rejects_non_gpu_ami_parameter" {
  command = plan
  variables {
    gpu_ami_ssm_parameter = "/aws/service/ecs/optimized-ami/amazon-linux-2/recommended/image_id"
  }
  expect_failures = [var.gpu_ami_ssm_parameter]
}
