# Offline test of the two-regions example (mock AWS providers): one Route 53
# failover pair of records on the two EIPs, each with an HTTP health check on
# the service's health path, and the health port open only to the checkers.

mock_provider "aws" {
  alias = "primary"
  mock_data "aws_ip_ranges" {
    defaults = { cidr_blocks = ["15.177.0.0/18", "54.251.31.128/26"] }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_ssm_parameter" {
    defaults = { insecure_value = "ami-0123456789abcdef0" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_vpc" {
    defaults = { cidr_block = "10.10.0.0/16", cidr_block_associations = [] }
  }
  mock_resource "aws_vpc" {
    defaults = { id = "vpc-0aaaaaaaaaaaaaaa1" }
  }
  mock_resource "aws_eip" {
    defaults = { public_ip = "203.0.113.10" }
  }
}

mock_provider "aws" {
  alias = "secondary"
  mock_data "aws_region" {
    defaults = { name = "eu-central-1" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_ssm_parameter" {
    defaults = { insecure_value = "ami-0123456789abcdef0" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
  mock_data "aws_vpc" {
    defaults = { cidr_block = "10.20.0.0/16", cidr_block_associations = [] }
  }
  mock_resource "aws_vpc" {
    defaults = { id = "vpc-0bbbbbbbbbbbbbbb2" }
  }
  mock_resource "aws_eip" {
    defaults = { public_ip = "198.51.100.20" }
  }
}

override_data {
  target = module.pair_primary.data.aws_subnet.node[0]
  values = { availability_zone = "eu-west-1a", vpc_id = "vpc-0aaaaaaaaaaaaaaa1" }
}
override_data {
  target = module.pair_primary.data.aws_subnet.node[1]
  values = { availability_zone = "eu-west-1b", vpc_id = "vpc-0aaaaaaaaaaaaaaa1" }
}
override_data {
  target = module.pair_secondary.data.aws_subnet.node[0]
  values = { availability_zone = "eu-central-1a", vpc_id = "vpc-0bbbbbbbbbbbbbbb2" }
}
override_data {
  target = module.pair_secondary.data.aws_subnet.node[1]
  values = { availability_zone = "eu-central-1b", vpc_id = "vpc-0bbbbbbbbbbbbbbb2" }
}

variables {
  zone_id               = "Z0123456789ABCDEFGHIJ"
  record_name           = "web.example.com"
  floatlb_binary_url    = "https://artifacts.example.com/floatlb"
  floatlb_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
}

run "route53_failover_on_the_per_service_health_check" {
  command = apply

  assert {
    condition = { for k, r in aws_route53_record.service : k => "${r.failover_routing_policy[0].type} ${r.type} ${join(",", r.records)} check=${r.health_check_id == aws_route53_health_check.service[k].id}" } == {
      PRIMARY   = "PRIMARY A 203.0.113.10 check=true"
      SECONDARY = "SECONDARY A 198.51.100.20 check=true"
    }
    error_message = "one PRIMARY and one SECONDARY A record on the two pairs' EIPs, each with its health check"
  }
  assert {
    condition     = alltrue([for k, h in aws_route53_health_check.service : h.type == "HTTP" && h.resource_path == "/health/lb/web" && h.port == 8080 && h.ip_address == (k == "PRIMARY" ? "203.0.113.10" : "198.51.100.20")])
    error_message = "each check is GET /health/lb/{service} on the agent's health port at its region's EIP"
  }
  assert {
    condition     = alltrue([for r in aws_route53_record.service : length(r.alias) == 0])
    error_message = "plain A records: no alias, so no target health is evaluated"
  }
  assert {
    condition = alltrue([for m in [module.pair_primary, module.pair_secondary] : (
      jsonencode(sort([for k, r in m.ingress_rules : r.cidr if r.port == 8080])) == jsonencode(["15.177.0.0/18", "54.251.31.128/26"]) &&
      alltrue([for a in m.agent_args : contains(a, "--health-listen=0.0.0.0:8080")])
    )])
    error_message = "the health port is open to the Route 53 checkers only, and the agents listen on it"
  }
}
