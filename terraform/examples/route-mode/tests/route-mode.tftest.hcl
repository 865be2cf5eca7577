# Offline test of the route-mode example (mock AWS provider).

mock_provider "aws" {
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
    defaults = { cidr_block = "10.0.0.0/16", cidr_block_associations = [] }
  }
  mock_resource "aws_vpc" {
    defaults = { id = "vpc-0123456789abcdef0" }
  }
  mock_resource "aws_route_table" {
    defaults = { id = "rtb-0123456789abcdef0" }
  }
  mock_resource "aws_eip" {
    defaults = { id = "eipalloc-0123456789abcdef0", public_ip = "203.0.113.10" }
  }
  mock_data "aws_eip" {
    defaults = { public_ip = "203.0.113.10" }
  }
}

override_data {
  target = module.pair.data.aws_subnet.node[0]
  values = { availability_zone = "eu-west-1a", vpc_id = "vpc-0123456789abcdef0" }
}
override_data {
  target = module.pair.data.aws_subnet.node[1]
  values = { availability_zone = "eu-west-1b", vpc_id = "vpc-0123456789abcdef0" }
}

variables {
  floatlb_binary_url    = "https://artifacts.example.com/floatlb"
  floatlb_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
}

run "route_mode_steers_the_pairs_table_and_serves_web_on_the_eip" {
  command = apply

  assert {
    condition     = alltrue([for a in module.pair.agent_args : contains(a, "--cloud-mode=route") && contains(a, "--cloud-route-tables=rtb-0123456789abcdef0") && length([for f in a : f if startswith(f, "--ka=")]) == 1])
    error_message = "both nodes steer the pair's route table and elect over BFD"
  }
  assert {
    condition = jsondecode(regex("<<'FLOATLB_CONFIG'\n([^\n]*)\nFLOATLB_CONFIG", module.pair.user_data[0])[0]).lbAttr[0].serviceArguments == {
      name = "web", externalIP = "203.0.113.10", privateIP = "192.168.100.10", port = 80, protocol = "tcp", sel = 1, mode = 2
    }
    error_message = "the static service floats the EIP and the out-of-VPC VIP"
  }
  assert {
    condition     = module.iam.role_name != "" && length([for k, v in module.pair.ingress_rules : k if v.port == 80 && v.cidr == "0.0.0.0/0"]) == 1
    error_message = "port 80 is open to the world"
  }
}
