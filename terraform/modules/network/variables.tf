variable "name" {
  description = "Name prefix of everything this module creates, and the value of the floatlb:cluster tag."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$", var.name))
    error_message = "name must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit."
  }
}

variable "vpc_id" {
  description = "An existing VPC to put the subnets in. null creates a VPC with vpc_cidr."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0 (or be null to create a VPC)."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC this module creates (ignored with vpc_id)."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR such as 10.0.0.0/16."
  }
}

variable "internet_gateway_id" {
  description = "The existing VPC's internet gateway (with vpc_id). null creates one."
  type        = string
  default     = null

  validation {
    condition     = var.internet_gateway_id == null || can(regex("^igw-[0-9a-f]{8,17}$", var.internet_gateway_id))
    error_message = "internet_gateway_id must look like igw-0123456789abcdef0."
  }
}

variable "subnets" {
  description = "The two subnets of the pair, one per Availability Zone: az (e.g. eu-west-1a) and cidr (inside the VPC)."
  type = list(object({
    az   = string
    cidr = string
  }))

  validation {
    condition     = length(var.subnets) == 2
    error_message = "subnets must list exactly two subnets, one for each node of the pair."
  }
  validation {
    condition     = length(var.subnets) != 2 ? true : var.subnets[0].az != var.subnets[1].az
    error_message = "the two subnets must be in two different Availability Zones: that is what the pair fails over between."
  }
  validation {
    condition     = alltrue([for s in var.subnets : can(cidrhost(s.cidr, 0)) && can(regex("^[0-9.]+/[0-9]+$", s.cidr))])
    error_message = "every subnets[].cidr must be an IPv4 CIDR such as 10.0.1.0/24."
  }
}

variable "cloud_cidr_block" {
  description = "ENI mode: the --cloudcidrblock to associate with the VPC as a secondary CIDR, so floatlb never needs ec2:AssociateVpcCidrBlock. null: none (route mode, or already associated)."
  type        = string
  default     = null

  validation {
    condition     = var.cloud_cidr_block == null || (can(cidrhost(var.cloud_cidr_block, 0)) && can(regex("^[0-9.]+/(1[6-9]|2[0-8])$", var.cloud_cidr_block)))
    error_message = "cloud_cidr_block must be an IPv4 CIDR between /16 and /28 (what AWS accepts for a VPC CIDR block)."
  }
}

variable "ec2_endpoint" {
  description = "Create an interface VPC endpoint for the EC2 API, so a node reaches it without a public address or NAT."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
