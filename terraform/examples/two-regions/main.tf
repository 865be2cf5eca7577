# Two floatlb pairs in two regions behind one Route 53 failover record. Within
# a region the pair fails over in about a second (BFD, EIP move); between
# regions Route 53 fails over when the primary pair reports the service
# unhealthy on its per-service health endpoint, GET
# /health/lb/{name}, served by the agent on --health-listen (no token).

# Route 53's health checkers' address ranges: only they reach the health port.
data "aws_ip_ranges" "route53_healthchecks" {
  provider = aws.primary
  services = ["route53_healthchecks"]
}

locals {
  cluster = [for r in var.regions : "${var.name}-${r}"]
  subnets = [for i in [0, 1] : [for j, az in var.azs[i] : { az = az, cidr = cidrsubnet(var.vpc_cidrs[i], 8, j + 1) }]]
  pair_common = {
    services     = [{ port = var.service_port }]
    health_port  = var.health_port
    health_cidrs = data.aws_ip_ranges.route53_healthchecks.cidr_blocks
  }
}

# --- primary region
module "network_primary" {
  source    = "../../modules/network"
  providers = { aws = aws.primary }

  name             = local.cluster[0]
  vpc_cidr         = var.vpc_cidrs[0]
  subnets          = local.subnets[0]
  cloud_cidr_block = var.cloud_cidr_blocks[0]
}

module "iam_primary" {
  source    = "../../modules/iam"
  providers = { aws = aws.primary }

  cluster_name           = local.cluster[0]
  vpc_id                 = module.network_primary.vpc_id
  tag_network_interfaces = module.pair_primary.primary_network_interface_ids
}

module "pair_primary" {
  source    = "../../modules/pair"
  providers = { aws = aws.primary }

  cluster_name          = local.cluster[0]
  vpc_id                = module.network_primary.vpc_id
  nodes                 = [for j, s in local.subnets[0] : { subnet_id = module.network_primary.subnet_ids[j], private_ip = cidrhost(s.cidr, 10) }]
  instance_profile_name = module.iam_primary.instance_profile_name
  floatlb_binary_url    = var.floatlb_binary_url
  floatlb_binary_sha256 = var.floatlb_binary_sha256
  cloud_cidr_block      = var.cloud_cidr_blocks[0]
  vip                   = cidrhost(var.cloud_cidr_blocks[0], 4)
  cluster_cidrs         = [var.vpc_cidrs[0]]
  admin_cidrs           = var.admin_cidrs
  services              = local.pair_common.services
  health_port           = local.pair_common.health_port
  health_cidrs          = local.pair_common.health_cidrs
}

# --- secondary region
module "network_secondary" {
  source    = "../../modules/network"
  providers = { aws = aws.secondary }

  name             = local.cluster[1]
  vpc_cidr         = var.vpc_cidrs[1]
  subnets          = local.subnets[1]
  cloud_cidr_block = var.cloud_cidr_blocks[1]
}

module "iam_secondary" {
  source    = "../../modules/iam"
  providers = { aws = aws.secondary }

  cluster_name           = local.cluster[1]
  vpc_id                 = module.network_secondary.vpc_id
  tag_network_interfaces = module.pair_secondary.primary_network_interface_ids
}

module "pair_secondary" {
  source    = "../../modules/pair"
  providers = { aws = aws.secondary }

  cluster_name          = local.cluster[1]
  vpc_id                = module.network_secondary.vpc_id
  nodes                 = [for j, s in local.subnets[1] : { subnet_id = module.network_secondary.subnet_ids[j], private_ip = cidrhost(s.cidr, 10) }]
  instance_profile_name = module.iam_secondary.instance_profile_name
  floatlb_binary_url    = var.floatlb_binary_url
  floatlb_binary_sha256 = var.floatlb_binary_sha256
  cloud_cidr_block      = var.cloud_cidr_blocks[1]
  vip                   = cidrhost(var.cloud_cidr_blocks[1], 4)
  cluster_cidrs         = [var.vpc_cidrs[1]]
  admin_cidrs           = var.admin_cidrs
  services              = local.pair_common.services
  health_port           = local.pair_common.health_port
  health_cidrs          = local.pair_common.health_cidrs
}

# --- DNS failover
locals {
  sites = {
    PRIMARY   = module.pair_primary.eip_public_ip
    SECONDARY = module.pair_secondary.eip_public_ip
  }
}

# One check per region, against the service's own health, not the node's:
# the agent answers 200 only while it serves the service (MASTER, endpoints up).
resource "aws_route53_health_check" "service" {
  for_each = local.sites
  provider = aws.primary

  type              = "HTTP"
  ip_address        = each.value
  port              = var.health_port
  resource_path     = "/health/lb/${var.service_name}"
  request_interval  = 10
  failure_threshold = 3
  tags              = { Name = "${var.name}-${lower(each.key)}-${var.service_name}" }
}

# Plain A records on the EIPs: failover follows the health checks alone.
# (evaluate_target_health exists only on alias records; there is none here,
# so no target health is evaluated.)
resource "aws_route53_record" "service" {
  for_each = local.sites
  provider = aws.primary

  #checkov:skip=CKV2_AWS_23:the records are the pairs' Elastic IPs, which come from module outputs that checkov cannot follow

  zone_id         = var.zone_id
  name            = var.record_name
  type            = "A"
  ttl             = 30
  records         = [each.value]
  set_identifier  = lower(each.key)
  health_check_id = aws_route53_health_check.service[each.key].id

  failover_routing_policy {
    type = each.key
  }
}
