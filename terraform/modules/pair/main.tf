# The floatlb pair: two instances in two Availability Zones, the Elastic IP
# they float, and one security group that opens BFD and sync only between
# them, the API only to the cluster and the admins, and the services' ports to
# whom they are meant for.
#
# user_data installs the agent as packaging/floatlb.service (read here with
# file(): one unit for every way of deploying) with its flags in
# /etc/floatlb/floatlb.env.

locals {
  bfd_port  = 3784  # BFD single hop (RFC 5881), agent/bfd CONTROL_PORT
  sync_port = 22222 # connection sync between the nodes (loxilb's port)
  api_port  = 11111 # REST API (loxilb's port): kube-loxilb, floatctl

  tags = merge(var.tags, { "floatlb:cluster" = var.cluster_name })
  ips  = [for n in var.nodes : n.private_ip]

  # Every ingress rule of the pair's security group, by a name known at plan
  # time. Nothing else is open: the tests compare this whole set.
  ingress = merge(
    merge([for i, ip in local.ips : {
      "bfd-from-node${i}" = {
        description = "BFD from node ${i}"
        protocol    = "udp"
        port        = local.bfd_port
        cidr        = "${ip}/32"
      }
      "sync-from-node${i}" = {
        description = "connection sync from node ${i}"
        protocol    = "tcp"
        port        = local.sync_port
        cidr        = "${ip}/32"
      }
    }]...),
    { for c in distinct(concat(var.cluster_cidrs, var.admin_cidrs)) : "api-from-${c}" => {
      description = "API from ${contains(var.cluster_cidrs, c) ? "the cluster" : "admins"} ${c}"
      protocol    = "tcp"
      port        = local.api_port
      cidr        = c
    } },
    merge([for s in var.services : { for c in s.cidrs : "svc-${s.protocol}-${s.port}-from-${c}" => {
      description = "service ${s.protocol}/${s.port} from ${c}"
      protocol    = s.protocol
      port        = s.port
      cidr        = c
    } }]...),
    var.health_port == null ? {} : { for c in var.health_cidrs : "health-from-${c}" => {
      description = "per-service health checks from ${c}"
      protocol    = "tcp"
      port        = var.health_port
      cidr        = c
    } },
  )

  # The agent's flags, node by node (loxilb's names where loxilb has them).
  args = [for i in [0, 1] : compact(concat(
    [
      "--cloud=aws",
      "--cloud-cluster-name=${var.cluster_name}",
    ],
    var.mode == "eni" ? ["--cloudcidrblock=${var.cloud_cidr_block}"] : [
      "--cloud-mode=route",
      "--cloud-route-tables=${join(",", var.route_table_ids)}",
    ],
    [
      "--cluster=${local.ips[1 - i]}",
      "--self=${i}",
      var.role_assignment == "bfd" ? "--ka=${local.ips[1 - i]}:${local.ips[i]}:${var.bfd_interval_us}" : "",
      # ip_forward stays 0 (only XDP forwards); FIB lookups go through lo,
      # whose forwarding user_data turns on (README, datapath flags).
      "--fib-lookup-iface=lo",
      "--ha-state-file=/var/lib/floatlb/ha-state.json",
      # Services the operator pins; with kube-loxilb the file is empty and the
      # API adds the services (a reload removes only rules the file dropped).
      "--config=/etc/floatlb/services.json",
      var.health_port == null ? "" : "--health-listen=0.0.0.0:${var.health_port}",
    ],
    var.extra_flags,
  ))]

  unit = file("${path.module}/../../../packaging/floatlb.service")

  user_data = [for i in [0, 1] : templatefile("${path.module}/user_data.sh.tftpl", {
    node            = i
    args            = join(" ", local.args[i])
    binary_url      = var.floatlb_binary_url
    binary_sha256   = var.floatlb_binary_sha256
    services_config = coalesce(var.services_config, jsonencode({ lbAttr = [] }))
    unit            = local.unit
  })]

  ami_id = coalesce(var.ami_id, try(data.aws_ssm_parameter.debian[0].insecure_value, null))

  vpc_cidrs = distinct(concat([data.aws_vpc.this.cidr_block], try(data.aws_vpc.this.cidr_block_associations[*].cidr_block, [])))
  # Route mode: is the VIP inside one of the VPC's CIDRs? (network address of
  # VIP/prefix == the CIDR's network address)
  vip_in_vpc = [for c in local.vpc_cidrs : try(cidrhost("${var.vip}/${split("/", c)[1]}", 0) == cidrhost(c, 0), false)]
}

data "aws_ssm_parameter" "debian" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/debian/release/bookworm/latest/amd64"
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_subnet" "node" {
  count = 2
  id    = var.nodes[count.index].subnet_id
}

resource "aws_security_group" "pair" {
  name        = "${var.cluster_name}-floatlb-pair"
  description = "floatlb pair ${var.cluster_name}: BFD and sync between the nodes, API from the cluster and admins, service ports"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.cluster_name}-floatlb-pair" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "pair" {
  for_each = local.ingress

  security_group_id = aws_security_group.pair.id
  description       = each.value.description
  ip_protocol       = each.value.protocol
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
  tags              = local.tags
}

# Egress: anything inside the VPC's primary CIDR (endpoints, the peer, the VPC
# resolver), the endpoints' other CIDRs, and HTTPS out (the EC2 API, the
# binary at install). No egress to the world on other ports. (One rule for the
# VPC, not one per VPC CIDR: a VPC created in the same apply has CIDRs unknown
# at plan time, and for_each needs its keys at plan time.)
resource "aws_vpc_security_group_egress_rule" "vpc" {
  security_group_id = aws_security_group.pair.id
  description       = "endpoints, peer and VPC services"
  ip_protocol       = "-1"
  cidr_ipv4         = data.aws_vpc.this.cidr_block
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "endpoints" {
  for_each = toset(var.endpoint_cidrs)

  security_group_id = aws_security_group.pair.id
  description       = "endpoints in ${each.value}"
  ip_protocol       = "-1"
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.pair.id
  description       = "EC2 API and the floatlb binary"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_instance" "node" {
  count = 2

  #checkov:skip=CKV_AWS_88:the BACKUP must reach the EC2 API to promote; a public address is the default path (associate_public_ip = false with NAT or the network module's ec2_endpoint)
  #checkov:skip=CKV2_AWS_41:false positive: the IAM role is attached through var.instance_profile_name, which checkov cannot resolve
  ami                         = local.ami_id
  instance_type               = var.instance_type
  key_name                    = var.key_name
  subnet_id                   = var.nodes[count.index].subnet_id
  private_ip                  = var.nodes[count.index].private_ip
  vpc_security_group_ids      = [aws_security_group.pair.id]
  iam_instance_profile        = var.instance_profile_name
  associate_public_ip_address = var.associate_public_ip
  # The node forwards traffic for addresses it does not own (the VIP, fullnat
  # replies): the primary ENI must not drop it.
  source_dest_check = false
  monitoring        = true
  ebs_optimized     = true
  user_data         = local.user_data[count.index]

  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required" # IMDSv2 only: the agent uses a token (docs/CLOUD.md)
    # 1 hop: only the host (and host-network containers) reach IMDS, not a
    # bridged container.
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    encrypted             = true
    kms_key_id            = var.kms_key_id
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    delete_on_termination = true
    tags                  = merge(local.tags, { Name = "${var.cluster_name}-floatlb-node${count.index}" })
  }

  tags = merge(local.tags, { Name = "${var.cluster_name}-floatlb-node${count.index}" })

  lifecycle {
    precondition {
      condition     = length(local.user_data[count.index]) <= 16384
      error_message = "node ${count.index}'s user_data is ${length(local.user_data[count.index])} bytes, over EC2's 16 KiB: services_config is too large; let kube-loxilb or the API create the services."
    }
    precondition {
      condition     = data.aws_subnet.node[0].availability_zone != data.aws_subnet.node[1].availability_zone
      error_message = "nodes[0] and nodes[1] are in the same Availability Zone (${data.aws_subnet.node[0].availability_zone}): the pair must span two."
    }
    precondition {
      condition     = alltrue([for s in data.aws_subnet.node : s.vpc_id == var.vpc_id])
      error_message = "both nodes' subnets must be in vpc_id ${var.vpc_id}."
    }
    precondition {
      condition     = var.mode != "route" || !anytrue(local.vip_in_vpc)
      error_message = "route mode needs the VIP ${var.vip} outside the VPC's CIDRs (${join(", ", local.vpc_cidrs)}): inside them the VPC's local route wins over VIP/32."
    }
  }
}

# The floating address, unassociated: the agent associates it with the MASTER
# at run time, so Terraform must not manage the association (it would fight
# every failover).
resource "aws_eip" "this" {
  count = var.create_eip ? 1 : 0

  #checkov:skip=CKV2_AWS_19:the agent associates the EIP with whichever node is MASTER; an association in Terraform would undo every failover
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${var.cluster_name}-floatlb" })
}

data "aws_eip" "passed" {
  count = var.create_eip ? 0 : 1
  id    = var.eip_allocation_id
}
