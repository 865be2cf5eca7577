# The nodes' IAM role, its policy and the instance profile, and the
# floatlb:cluster tags the policy's conditions rely on.
#
# The policy is iam/policy.json itself, rendered with templatefile(): its
# placeholders are Terraform template syntax (cluster_name, vpc_id, partition,
# region, account_id in ${...}), the substitution iam/README.md documents
# ("replace every $${name} by its value"). All five are passed; templatefile
# ignores the ones a policy version does not use, and fails on any it uses
# that is not passed.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  policy_path = coalesce(var.policy_path, "${path.module}/../../../iam/policy.json")
  policy_vars = {
    cluster_name = var.cluster_name
    vpc_id       = var.vpc_id
    partition    = data.aws_partition.current.partition
    region       = data.aws_region.current.name
    account_id   = data.aws_caller_identity.current.account_id
  }
  policy = templatefile(local.policy_path, local.policy_vars)
  tags   = merge(var.tags, { "floatlb:cluster" = var.cluster_name })
  cluster_tag = merge(
    { for k, id in var.tag_network_interfaces : "eni-${k}" => id },
    { for k, id in var.tag_route_tables : "rtb-${k}" => id },
    { for k, id in var.tag_elastic_ips : "eip-${k}" => id },
  )
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name                 = "${var.cluster_name}-floatlb-node"
  description          = "floatlb nodes of cluster ${var.cluster_name}: move the cluster's EIPs, VIP subnet/ENI or VIP routes"
  assume_role_policy   = data.aws_iam_policy_document.assume.json
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_role_policy" "node" {
  name   = "floatlb"
  role   = aws_iam_role.node.id
  policy = local.policy

  lifecycle {
    precondition {
      condition     = can(jsondecode(local.policy).Statement)
      error_message = "${local.policy_path} did not render to a JSON policy with a Statement list."
    }
  }
}

resource "aws_iam_instance_profile" "node" {
  name = "${var.cluster_name}-floatlb-node"
  role = aws_iam_role.node.name
  tags = local.tags
}

# Existing resources the policy's conditions match on aws:ResourceTag. Only
# this one key is added: other tags on them are left alone.
resource "aws_ec2_tag" "cluster" {
  for_each = local.cluster_tag

  resource_id = each.value
  key         = "floatlb:cluster"
  value       = var.cluster_name
}
