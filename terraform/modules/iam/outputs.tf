output "role_name" {
  description = "The nodes' IAM role."
  value       = aws_iam_role.node.name
}

output "role_arn" {
  description = "The nodes' IAM role ARN."
  value       = aws_iam_role.node.arn
}

output "instance_profile_name" {
  description = "The instance profile to give both instances (the pair module's instance_profile_name)."
  value       = aws_iam_instance_profile.node.name
}

output "policy_json" {
  description = "The rendered policy, as attached to the role."
  value       = local.policy
}
