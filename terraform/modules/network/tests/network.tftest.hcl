# Offline tests of the network module (mock AWS provider).

mock_provider "aws" {
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
}

variables {
  name = "prod-a"
  subnets = [
    { az = "eu-west-1a", cidr = "10.0.1.0/24" },
    { az = "eu-west-1b", cidr = "10.0.2.0/24" },
  ]
  cloud_cidr_block = "10.1.0.0/28"
}

run "new_vpc_two_azs_internet_route_and_cloud_block" {
  command = apply

  assert {
    condition     = length(aws_vpc.this) == 1 && [for s in aws_subnet.pair : s.availability_zone] == ["eu-west-1a", "eu-west-1b"] && alltrue([for s in aws_subnet.pair : s.vpc_id == aws_vpc.this[0].id && !s.map_public_ip_on_launch])
    error_message = "two subnets of the new VPC, one per AZ, without automatic public IPs"
  }
  assert {
    condition     = aws_route.default.destination_cidr_block == "0.0.0.0/0" && aws_route.default.gateway_id == aws_internet_gateway.this[0].id && aws_route.default.route_table_id == aws_route_table.pair.id
    error_message = "the pair's route table sends 0.0.0.0/0 to the internet gateway"
  }
  assert {
    condition     = alltrue([for a in aws_route_table_association.pair : a.route_table_id == aws_route_table.pair.id]) && length(aws_route_table_association.pair) == 2
    error_message = "both subnets use the pair's route table"
  }
  assert {
    condition     = aws_route_table.pair.tags["floatlb:cluster"] == "prod-a"
    error_message = "the route table carries the cluster tag (ENI mode associates the VIP subnet with it)"
  }
  assert {
    condition     = aws_vpc_ipv4_cidr_block_association.cloud[0].cidr_block == "10.1.0.0/28" && aws_vpc_ipv4_cidr_block_association.cloud[0].vpc_id == aws_vpc.this[0].id
    error_message = "the cloud CIDR block is associated with the VPC"
  }
  assert {
    condition     = length(aws_default_security_group.this[0].ingress) == 0 && length(aws_default_security_group.this[0].egress) == 0
    error_message = "the new VPC's default security group allows nothing"
  }
}

run "existing_vpc_and_gateway" {
  command = plan
  variables {
    vpc_id              = "vpc-0123456789abcdef0"
    internet_gateway_id = "igw-0123456789abcdef0"
    cloud_cidr_block    = null
  }
  assert {
    condition     = length(aws_vpc.this) == 0 && length(aws_internet_gateway.this) == 0 && alltrue([for s in aws_subnet.pair : s.vpc_id == "vpc-0123456789abcdef0"]) && aws_route.default.gateway_id == "igw-0123456789abcdef0" && length(aws_vpc_ipv4_cidr_block_association.cloud) == 0
    error_message = "with vpc_id and internet_gateway_id nothing of them is created"
  }
}

run "refuses_two_subnets_in_one_az" {
  command = plan
  variables {
    subnets = [
      { az = "eu-west-1a", cidr = "10.0.1.0/24" },
      { az = "eu-west-1a", cidr = "10.0.2.0/24" },
    ]
  }
  expect_failures = [var.subnets]
}
