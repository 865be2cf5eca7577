# The pair's network: a VPC (or an existing one), two public subnets in two
# Availability Zones, an internet gateway and the route table that sends
# 0.0.0.0/0 to it. ENI mode's cloud CIDR block can be associated here, so the
# agent's role never needs ec2:AssociateVpcCidrBlock.

locals {
  create_vpc = var.vpc_id == null
  vpc_id     = local.create_vpc ? aws_vpc.this[0].id : var.vpc_id
  igw_id     = var.internet_gateway_id == null ? aws_internet_gateway.this[0].id : var.internet_gateway_id
  tags       = merge(var.tags, { "floatlb:cluster" = var.name })
}

resource "aws_vpc" "this" {
  count = local.create_vpc ? 1 : 0

  #checkov:skip=CKV2_AWS_11:flow logs are the VPC owner's choice (destination, retention, cost); this module only builds the pair's network

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = var.name })
}

# A VPC this module creates gets a default security group with no rules, so
# nothing that falls back to it is reachable.
resource "aws_default_security_group" "this" {
  count = local.create_vpc ? 1 : 0

  vpc_id = aws_vpc.this[0].id
  tags   = merge(local.tags, { Name = "${var.name}-default-closed" })
}

resource "aws_vpc_ipv4_cidr_block_association" "cloud" {
  count = var.cloud_cidr_block == null ? 0 : 1

  vpc_id     = local.vpc_id
  cidr_block = var.cloud_cidr_block
}

resource "aws_internet_gateway" "this" {
  count = var.internet_gateway_id == null ? 1 : 0

  vpc_id = local.vpc_id
  tags   = merge(local.tags, { Name = var.name })
}

resource "aws_subnet" "pair" {
  count = 2

  vpc_id            = local.vpc_id
  availability_zone = var.subnets[count.index].az
  cidr_block        = var.subnets[count.index].cidr
  # Instances get public addresses from the pair module's choice, not from the subnet.
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "${var.name}-${var.subnets[count.index].az}" })
}

# One route table for both subnets. It carries the cluster tag: in ENI mode
# floatlb associates its VIP subnet with it, in route mode it may be one of the
# tables whose VIP/32 route floatlb points at the MASTER.
resource "aws_route_table" "pair" {
  vpc_id = local.vpc_id
  tags   = merge(local.tags, { Name = "${var.name}-pair" })
}

resource "aws_route" "default" {
  route_table_id         = aws_route_table.pair.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = local.igw_id
}

resource "aws_route_table_association" "pair" {
  count = 2

  subnet_id      = aws_subnet.pair[count.index].id
  route_table_id = aws_route_table.pair.id
}

# Optional private path to the EC2 API: the BACKUP must reach it to promote.
resource "aws_security_group" "endpoint" {
  count = var.ec2_endpoint ? 1 : 0

  name        = "${var.name}-ec2-endpoint"
  description = "HTTPS to the EC2 interface endpoint from the pair's subnets"
  vpc_id      = local.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "endpoint" {
  count = var.ec2_endpoint ? 2 : 0

  security_group_id = aws_security_group.endpoint[0].id
  description       = "HTTPS from ${var.subnets[count.index].az}"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.subnets[count.index].cidr
}

data "aws_region" "current" {}

resource "aws_vpc_endpoint" "ec2" {
  count = var.ec2_endpoint ? 1 : 0

  vpc_id              = local.vpc_id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.ec2"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.pair[*].id
  security_group_ids  = [aws_security_group.endpoint[0].id]
  tags                = merge(local.tags, { Name = "${var.name}-ec2" })
}
