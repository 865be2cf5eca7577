# Route mode in a new VPC: the VIP lies outside the VPC's CIDR, and the agent
# points VIP/32 in the pair's route table at the MASTER's primary ENI (no
# subnet or ENI moves). The pair elects itself over BFD (--ka) and serves one
# service from a static config; the EIP is allocated here and passed in.

module "network" {
  source = "../../modules/network"

  name     = var.cluster_name
  vpc_cidr = var.vpc_cidr
  subnets  = [for i, az in var.azs : { az = az, cidr = cidrsubnet(var.vpc_cidr, 8, i + 1) }]
}

# Passed in to show the path; the iam module gives it the cluster tag.
resource "aws_eip" "web" {
  #checkov:skip=CKV2_AWS_19:the agent associates the EIP with whichever node is MASTER; an association in Terraform would undo every failover
  domain = "vpc"
  tags   = { Name = "${var.cluster_name}-web" }

  lifecycle {
    # floatlb:cluster is set by the iam module (aws_ec2_tag), floatlb:lease by the agent.
    ignore_changes = [tags]
  }
}

module "iam" {
  source = "../../modules/iam"

  cluster_name           = var.cluster_name
  vpc_id                 = module.network.vpc_id
  tag_network_interfaces = module.pair.primary_network_interface_ids
  tag_elastic_ips        = { web = aws_eip.web.id }
  # The network module's route table already carries the cluster tag.
}

module "pair" {
  source = "../../modules/pair"

  cluster_name = var.cluster_name
  vpc_id       = module.network.vpc_id
  nodes = [for i in [0, 1] : {
    subnet_id  = module.network.subnet_ids[i]
    private_ip = cidrhost(cidrsubnet(var.vpc_cidr, 8, i + 1), 10)
  }]
  instance_profile_name = module.iam.instance_profile_name
  floatlb_binary_url    = var.floatlb_binary_url
  floatlb_binary_sha256 = var.floatlb_binary_sha256

  mode              = "route"
  route_table_ids   = [module.network.route_table_id]
  vip               = var.vip
  create_eip        = false
  eip_allocation_id = aws_eip.web.id
  role_assignment   = "bfd"

  cluster_cidrs = [var.vpc_cidr]
  admin_cidrs   = var.admin_cidrs
  services      = [{ port = 80 }]
  services_config = jsonencode({
    lbAttr = [{
      serviceArguments = {
        name       = "web"
        externalIP = aws_eip.web.public_ip
        privateIP  = var.vip
        port       = 80
        protocol   = "tcp"
        sel        = 1
        mode       = 2
      }
      endpoints = [for ip in var.endpoints : { endpointIP = ip, targetPort = 8080, weight = 1 }]
    }]
  })
}
