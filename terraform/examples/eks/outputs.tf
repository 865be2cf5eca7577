output "kube_loxilb_manifest" {
  description = "kube-loxilb's manifest with --loxiURL, --externalCIDR (the EIP) and --privateCIDR (the VIP) filled in: terraform output -raw kube_loxilb_manifest > kube-loxilb.yaml"
  value       = local.kube_loxilb_manifest
}

output "eip" {
  description = "The services' external address."
  value       = module.pair.eip_public_ip
}

output "vip" {
  description = "The private VIP."
  value       = module.pair.vip
}

output "api_urls" {
  description = "Both nodes' APIs, for floatctl --server."
  value       = module.pair.loxi_url
}

output "instance_ids" {
  description = "node0, node1."
  value       = module.pair.instance_ids
}
