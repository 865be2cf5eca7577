output "vpc_id" {
  description = "The VPC (created or passed in)."
  value       = local.vpc_id
}

output "subnet_ids" {
  description = "The pair's two subnets, node 0's first."
  value       = aws_subnet.pair[*].id
}

output "subnet_cidrs" {
  description = "The two subnets' CIDRs, in the order of subnet_ids."
  value       = aws_subnet.pair[*].cidr_block
}

output "availability_zones" {
  description = "The two subnets' Availability Zones, in the order of subnet_ids."
  value       = aws_subnet.pair[*].availability_zone
}

output "route_table_id" {
  description = "The route table of both subnets (tagged floatlb:cluster)."
  value       = aws_route_table.pair.id
}

output "internet_gateway_id" {
  description = "The internet gateway (created or passed in)."
  value       = local.igw_id
}
