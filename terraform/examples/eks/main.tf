# A floatlb pair next to an existing EKS cluster, driven by kube-loxilb: the
# pair's subnets go into the cluster's VPC, the API is open to the VPC (where
# kube-loxilb runs) and to the admins, and kube-loxilb assigns the roles
# (role_assignment = "bfd": the pair elects itself, kube-loxilb without --setRoles).
# `terraform output -raw kube_loxilb_manifest | kubectl apply -f -` deploys it.

data "aws_eks_cluster" "this" {
  name = var.eks_cluster_name
}

data "aws_vpc" "eks" {
  id = data.aws_eks_cluster.this.vpc_config[0].vpc_id
}

data "aws_internet_gateway" "eks" {
  filter {
    name   = "attachment.vpc-id"
    values = [data.aws_vpc.eks.id]
  }
}

module "network" {
  source = "../../modules/network"

  name                = var.cluster_name
  vpc_id              = data.aws_vpc.eks.id
  internet_gateway_id = data.aws_internet_gateway.eks.id
  subnets             = var.subnets
  cloud_cidr_block    = var.cloud_cidr_block
}

module "iam" {
  source = "../../modules/iam"

  cluster_name           = var.cluster_name
  vpc_id                 = data.aws_vpc.eks.id
  tag_network_interfaces = module.pair.primary_network_interface_ids
}

module "pair" {
  source = "../../modules/pair"

  cluster_name = var.cluster_name
  vpc_id       = data.aws_vpc.eks.id
  nodes = [for i in [0, 1] : {
    subnet_id  = module.network.subnet_ids[i]
    private_ip = cidrhost(var.subnets[i].cidr, 10)
  }]
  instance_profile_name = module.iam.instance_profile_name
  floatlb_binary_url    = var.floatlb_binary_url
  floatlb_binary_sha256 = var.floatlb_binary_sha256

  mode             = "eni"
  cloud_cidr_block = var.cloud_cidr_block
  vip              = var.vip
  role_assignment  = var.role_assignment

  cluster_cidrs = [data.aws_vpc.eks.cidr_block]
  admin_cidrs   = var.admin_cidrs
  services      = [for p in var.service_ports : { port = p }]
}

locals {
  kube_loxilb_manifest = templatefile("${path.module}/kube-loxilb.yaml.tftpl", {
    image         = var.kube_loxilb_image
    loxi_url      = module.pair.loxi_url
    external_cidr = "${module.pair.eip_public_ip}/32"
    private_cidr  = "${module.pair.vip}/32"
    set_roles     = var.role_assignment == "kube-loxilb"
  })
}
