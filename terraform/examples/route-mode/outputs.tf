output "eip" {
  description = "The service's external address."
  value       = aws_eip.web.public_ip
}

output "vip" {
  description = "The private VIP (routed to the MASTER)."
  value       = var.vip
}

output "api_urls" {
  description = "Both nodes' APIs, for floatctl."
  value       = module.pair.loxi_url
}

output "instance_ids" {
  description = "node0, node1."
  value       = module.pair.instance_ids
}
