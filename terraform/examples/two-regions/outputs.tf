output "eips" {
  description = "The services' addresses, primary first."
  value       = [module.pair_primary.eip_public_ip, module.pair_secondary.eip_public_ip]
}

output "health_check_ids" {
  description = "Route 53 health checks (PRIMARY, SECONDARY)."
  value       = { for k, h in aws_route53_health_check.service : k => h.id }
}

output "api_urls" {
  description = "Each region's pair APIs, primary first."
  value       = [module.pair_primary.loxi_url, module.pair_secondary.loxi_url]
}
