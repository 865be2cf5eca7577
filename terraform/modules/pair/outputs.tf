output "instance_ids" {
  description = "The two instances, node 0 first."
  value       = aws_instance.node[*].id
}

output "private_ips" {
  description = "The nodes' primary private IPv4 addresses, node 0 first."
  value       = local.ips
}

output "primary_network_interface_ids" {
  description = "The nodes' primary ENIs by node (node0, node1): give them to the iam module's tag_network_interfaces."
  value       = { for i, n in aws_instance.node : "node${i}" => n.primary_network_interface_id }
}

output "security_group_id" {
  description = "The pair's security group."
  value       = aws_security_group.pair.id
}

output "eip_allocation_id" {
  description = "The floating Elastic IP's allocation id."
  value       = var.create_eip ? aws_eip.this[0].id : var.eip_allocation_id
}

output "eip_public_ip" {
  description = "The floating Elastic IP's address: the services' externalIP, kube-loxilb's --externalCIDR (as /32)."
  value       = var.create_eip ? aws_eip.this[0].public_ip : data.aws_eip.passed[0].public_ip
}

output "vip" {
  description = "The private VIP: the services' privateIP, kube-loxilb's --privateCIDR (as /32)."
  value       = var.vip
}

output "loxi_url" {
  description = "kube-loxilb's --loxiURL: both nodes' APIs."
  value       = join(",", [for ip in local.ips : "http://${ip}:${local.api_port}"])
}

output "agent_args" {
  description = "Each node's agent flags (FLOATLB_ARGS in /etc/floatlb/floatlb.env), node 0 first."
  value       = local.args
}

output "user_data" {
  description = "Each node's rendered user_data, node 0 first (the instance's state keeps only a hash)."
  value       = local.user_data
}

output "ingress_rules" {
  description = "Every ingress rule of the pair's security group: name => protocol, port, CIDR."
  value       = local.ingress
}
