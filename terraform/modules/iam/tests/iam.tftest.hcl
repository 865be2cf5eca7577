# Offline tests of the iam module (mock AWS provider). The policy attached to
# the role must be iam/policy.json rendered by the substitution iam/README.md
# documents: replace every ${name} by its value. The expected value below is
# computed with plain string replacement, independently of templatefile().

mock_provider "aws" {
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"sts:AssumeRole\",\"Principal\":{\"Service\":\"ec2.amazonaws.com\"}}]}" }
  }
}

variables {
  cluster_name = "prod-a"
  vpc_id       = "vpc-0123456789abcdef0"
  tag_network_interfaces = {
    node0 = "eni-0aaaaaaaaaaaaaaa1"
    node1 = "eni-0bbbbbbbbbbbbbbb2"
  }
  tag_route_tables = {
    steer = "rtb-0ccccccccccccccc3"
  }
  tag_elastic_ips = {
    main = "eipalloc-0ddddddddddddddd4"
  }
}

run "policy_is_iam_policy_json_with_the_documented_substitution" {
  command = apply

  assert {
    condition = jsondecode(aws_iam_role_policy.node.policy) == jsondecode(
      replace(replace(replace(replace(replace(
        file("${path.module}/../../../iam/policy.json"),
        "$${cluster_name}", "prod-a"),
        "$${vpc_id}", "vpc-0123456789abcdef0"),
        "$${partition}", "aws"),
        "$${region}", "eu-west-1"),
      "$${account_id}", "123456789012")
    )
    error_message = "the role's policy is not iam/policy.json with its placeholders replaced"
  }
  assert {
    condition     = length(regexall("\\$\\{(cluster_name|vpc_id|partition|region|account_id)\\}", aws_iam_role_policy.node.policy)) == 0
    error_message = "a placeholder was left in the rendered policy"
  }
  # Every cluster-tag condition names this cluster. (Until iam/policy.json
  # carries the $${cluster_name} placeholder, issue 8, it pins the tag value
  # "floatlb"; then only that name is checked.)
  assert {
    condition = alltrue(flatten([
      for st in jsondecode(aws_iam_role_policy.node.policy).Statement : [
        for op, kv in try(st.Condition, {}) : [
          for k, v in kv : alltrue([for x in flatten([v]) : x == (strcontains(file("${path.module}/../../../iam/policy.json"), "$${cluster_name}") ? "prod-a" : "floatlb")])
          if endswith(k, "/floatlb:cluster")
        ]
      ]
    ]))
    error_message = "a floatlb:cluster condition does not name the cluster"
  }
  assert {
    condition     = aws_iam_role_policy.node.role == aws_iam_role.node.id && aws_iam_instance_profile.node.role == aws_iam_role.node.name
    error_message = "the policy and the instance profile belong to the node role"
  }
  assert {
    condition     = jsondecode(aws_iam_role.node.assume_role_policy).Statement[0].Principal.Service == "ec2.amazonaws.com"
    error_message = "only EC2 may assume the node role"
  }
}

run "tags_what_the_conditions_match" {
  command = plan

  assert {
    condition = { for k, t in aws_ec2_tag.cluster : k => "${t.resource_id} ${t.key}=${t.value}" } == {
      "eni-node0" = "eni-0aaaaaaaaaaaaaaa1 floatlb:cluster=prod-a"
      "eni-node1" = "eni-0bbbbbbbbbbbbbbb2 floatlb:cluster=prod-a"
      "rtb-steer" = "rtb-0ccccccccccccccc3 floatlb:cluster=prod-a"
      "eip-main"  = "eipalloc-0ddddddddddddddd4 floatlb:cluster=prod-a"
    }
    error_message = "the primary ENIs, route tables and passed-in EIPs must get floatlb:cluster = the cluster name"
  }
}

run "refuses_a_cluster_name_that_would_break_the_policy" {
  command = plan
  variables {
    cluster_name = "a\"b"
  }
  expect_failures = [var.cluster_name]
}
