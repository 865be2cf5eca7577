# Offline test of the eks example (mock AWS provider): the kube-loxilb
# manifest carries the pair's outputs, and the pair is wired to the EKS VPC.

mock_provider "aws" {
  mock_data "aws_eks_cluster" {
    defaults = { vpc_config = [{ vpc_id = "vpc-0123456789abcdef0" }] }
  }
  mock_data "aws_vpc" {
    defaults = {
      id                      = "vpc-0123456789abcdef0"
      cidr_block              = "10.0.0.0/16"
      cidr_block_associations = [{ association_id = "vpc-cidr-assoc-1", cidr_block = "10.0.0.0/16", state = "associated" }]
    }
  }
  mock_data "aws_internet_gateway" {
    defaults = { id = "igw-0123456789abcdef0" }
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
  mock_resource "aws_eip" {
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
  eks_cluster_name      = "prod"
  subnets               = [{ az = "eu-west-1a", cidr = "10.0.201.0/24" }, { az = "eu-west-1b", cidr = "10.0.202.0/24" }]
  floatlb_binary_url    = "https://artifacts.example.com/floatlb"
  floatlb_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
}

run "bfd_pair_gets_kube_loxilb_without_set_roles" {
  command = apply
  variables {
    role_assignment = "bfd"
  }
  assert {
    condition     = !strcontains(output.kube_loxilb_manifest, "--setRoles") && alltrue([for a in module.pair.agent_args : length([for f in a : f if startswith(f, "--ka=")]) == 1])
    error_message = "a BFD-electing pair: --ka on the agents, no --setRoles for kube-loxilb"
  }
}

run "kube_loxilb_manifest_is_filled_from_the_outputs" {
  command = apply

  assert {
    condition = alltrue([for arg in [
      "- --loxiURL=http://10.0.201.10:11111,http://10.0.202.10:11111\n",
      "- --externalCIDR=203.0.113.10/32\n",
      "- --privateCIDR=10.200.0.4/32\n",
      "- --setRoles=0.0.0.0\n",
    ] : strcontains(output.kube_loxilb_manifest, arg)])
    error_message = "the manifest must carry both APIs, the EIP and the VIP from the outputs"
  }
  assert {
    condition     = module.pair.loxi_url == "http://10.0.201.10:11111,http://10.0.202.10:11111" && output.eip == "203.0.113.10" && output.vip == "10.200.0.4"
    error_message = "the outputs the manifest is built from"
  }
  # kube-loxilb assigns the roles: no --ka; the API is open to the EKS VPC.
  assert {
    condition     = alltrue([for a in module.pair.agent_args : length([for f in a : f if startswith(f, "--ka")]) == 0])
    error_message = "with kube-loxilb assigning roles there is no --ka"
  }
  assert {
    condition     = module.pair.ingress_rules["api-from-10.0.0.0/16"].port == 11111
    error_message = "the API is open to the EKS VPC's CIDR"
  }
}
