variable "cluster_name" {
  description = "The cluster's name: the floatlb:cluster tag on every resource the agent may touch, and its --cloud-cluster-name. Must match the iam module's."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$", var.cluster_name))
    error_message = "cluster_name must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit."
  }
}

variable "vpc_id" {
  description = "The VPC of both nodes."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "nodes" {
  description = "The two nodes, node 0 (the preferred MASTER) first: the subnet (one per Availability Zone) and the fixed primary private IPv4 address, which the peer's --cluster/--ka and the security group name."
  type = list(object({
    subnet_id  = string
    private_ip = string
  }))

  validation {
    condition     = length(var.nodes) == 2
    error_message = "nodes must list exactly two nodes (--self=0 and --self=1)."
  }
  validation {
    condition     = alltrue([for n in var.nodes : can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}$", n.private_ip)) && can(cidrhost("${n.private_ip}/32", 0))])
    error_message = "every nodes[].private_ip must be an IPv4 address such as 10.0.1.10."
  }
  validation {
    condition     = length(var.nodes) != 2 ? true : (var.nodes[0].private_ip != var.nodes[1].private_ip && var.nodes[0].subnet_id != var.nodes[1].subnet_id)
    error_message = "the two nodes need different subnets (two Availability Zones) and different private IPs."
  }
}

variable "instance_type" {
  description = "EC2 instance type; pick one whose ENA driver supports native XDP (Nitro)."
  type        = string
  default     = "c6i.large"
}

variable "ami_id" {
  description = "AMI of both nodes. null: the latest Debian 12 (bookworm) amd64 AMI, from Debian's public SSM parameter."
  type        = string
  default     = null
}

variable "key_name" {
  description = "EC2 key pair for SSH (no SSH rule is opened by this module). null: none."
  type        = string
  default     = null
}

variable "root_volume_size" {
  description = "Root volume size in GiB (gp3, encrypted)."
  type        = number
  default     = 16

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 1024
    error_message = "root_volume_size must be 8..1024 GiB."
  }
}

variable "kms_key_id" {
  description = "KMS key for the root volumes. null: the account's default EBS key (still encrypted)."
  type        = string
  default     = null
}

variable "instance_profile_name" {
  description = "The instance profile of both nodes (the iam module's instance_profile_name)."
  type        = string
}

variable "associate_public_ip" {
  description = "Give each node a public IPv4 address, so the BACKUP reaches the EC2 API and the binary URL without NAT. Set false with a NAT gateway or the network module's ec2_endpoint."
  type        = bool
  default     = true
}

variable "floatlb_binary_url" {
  description = "HTTPS URL of the floatlb binary (x86_64 Linux) that user_data installs as /usr/local/bin/floatlb."
  type        = string

  validation {
    condition     = can(regex("^https://", var.floatlb_binary_url))
    error_message = "floatlb_binary_url must be an https:// URL."
  }
}

variable "floatlb_binary_sha256" {
  description = "SHA-256 of the binary at floatlb_binary_url; user_data refuses a binary that does not match."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.floatlb_binary_sha256))
    error_message = "floatlb_binary_sha256 must be 64 lowercase hex digits."
  }
}

variable "mode" {
  description = "How the private VIP follows the MASTER: eni (a VIP subnet and loxi-eni carved from cloud_cidr_block) or route (route_table_ids point VIP/32 at the MASTER's primary ENI)."
  type        = string
  default     = "eni"

  validation {
    condition     = contains(["eni", "route"], var.mode)
    error_message = "mode must be \"eni\" or \"route\"."
  }
}

variable "cloud_cidr_block" {
  description = "ENI mode: the --cloudcidrblock the VIP subnet is carved from (associate it with the VPC: network module's cloud_cidr_block)."
  type        = string
  default     = null

  validation {
    condition     = var.mode != "eni" || var.cloud_cidr_block != null
    error_message = "mode = \"eni\" needs cloud_cidr_block (the --cloudcidrblock)."
  }
  validation {
    condition     = var.cloud_cidr_block == null || can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}/(1[6-9]|2[0-8])$", var.cloud_cidr_block))
    error_message = "cloud_cidr_block must be an IPv4 CIDR between /16 and /28."
  }
}

variable "route_table_ids" {
  description = "Route mode: the route tables whose VIP/32 route floatlb points at the MASTER (--cloud-route-tables). Each must carry the floatlb:cluster tag (iam module's tag_route_tables)."
  type        = list(string)
  default     = []

  validation {
    condition     = var.mode != "route" || length(var.route_table_ids) > 0
    error_message = "mode = \"route\" needs at least one route table in route_table_ids."
  }
  validation {
    condition     = alltrue([for id in var.route_table_ids : can(regex("^rtb-[0-9a-f]{8,17}$", id))])
    error_message = "route_table_ids must be route table ids such as rtb-0123456789abcdef0."
  }
}

variable "vip" {
  description = "The private VIP (kube-loxilb's --privateCIDR, the services' privateIP). ENI mode: a usable address of cloud_cidr_block. Route mode: an address outside the VPC's CIDRs."
  type        = string

  validation {
    condition     = can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}$", var.vip)) && can(cidrhost("${var.vip}/32", 0))
    error_message = "vip must be an IPv4 address such as 192.168.100.10."
  }
  validation {
    # ENI mode: inside the block, and not one of the 4 first or the last
    # address, which AWS reserves in every subnet.
    # (HCL's || does not short-circuit: the guard is a conditional.)
    condition = (var.mode != "eni" || var.cloud_cidr_block == null) ? true : try(
      cidrhost("${var.vip}/${split("/", var.cloud_cidr_block)[1]}", 0) == cidrhost(var.cloud_cidr_block, 0) &&
      !contains([for i in [0, 1, 2, 3, -1] : cidrhost(var.cloud_cidr_block, i)], var.vip),
      false
    )
    error_message = "in ENI mode vip must be a usable address of cloud_cidr_block (not its first four or its last address)."
  }
}

variable "role_assignment" {
  description = "Who decides MASTER: \"bfd\" (the pair elects itself over BFD: --ka; run kube-loxilb without --setRoles, the agents refuse its cistate) or \"kube-loxilb\" (kube-loxilb --setRoles assigns the roles through the API: no --ka)."
  type        = string
  default     = "bfd"

  validation {
    condition     = contains(["bfd", "kube-loxilb"], var.role_assignment)
    error_message = "role_assignment must be \"bfd\" or \"kube-loxilb\"."
  }
}

variable "bfd_interval_us" {
  description = "BFD interval in microseconds (--ka PEER:SRC:INTERVAL); detection takes 3 intervals."
  type        = number
  default     = 100000

  validation {
    condition     = var.bfd_interval_us >= 10000 && var.bfd_interval_us <= 10000000 && floor(var.bfd_interval_us) == var.bfd_interval_us
    error_message = "bfd_interval_us must be a whole number of microseconds in 10000..10000000."
  }
}

variable "create_eip" {
  description = "Allocate the floating Elastic IP here (true), or float eip_allocation_id (false). A bool of its own: an id created in the same apply is unknown at plan time."
  type        = bool
  default     = true
}

variable "eip_allocation_id" {
  description = "With create_eip = false: the Elastic IP to float (eipalloc-...). It needs the floatlb:cluster tag (iam module's tag_elastic_ips)."
  type        = string
  default     = null

  validation {
    condition     = var.create_eip ? var.eip_allocation_id == null : var.eip_allocation_id != null
    error_message = "set eip_allocation_id exactly when create_eip = false."
  }

  validation {
    condition     = var.eip_allocation_id == null || can(regex("^eipalloc-[0-9a-f]{8,17}$", var.eip_allocation_id))
    error_message = "eip_allocation_id must look like eipalloc-0123456789abcdef0."
  }
}

variable "endpoint_cidrs" {
  description = "CIDRs of service endpoints outside the VPC's primary CIDR (e.g. EKS pods on a secondary CIDR): the nodes may send anything there."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.endpoint_cidrs : can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,2}$", c)) && can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "endpoint_cidrs must be IPv4 CIDRs, none of them /0."
  }
}

variable "cluster_cidrs" {
  description = "Who drives the API (11111/tcp): the Kubernetes cluster's CIDRs, where kube-loxilb runs."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.cluster_cidrs : can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,2}$", c)) && can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "cluster_cidrs must be IPv4 CIDRs, none of them /0: the API must not be open to the world."
  }
}

variable "admin_cidrs" {
  description = "Operators' CIDRs, also allowed to the API (11111/tcp) for floatctl."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.admin_cidrs : can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,2}$", c)) && can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "admin_cidrs must be IPv4 CIDRs, none of them /0: the API must not be open to the world."
  }
}

variable "services" {
  description = "The services' ports, and who may reach them (default: everyone)."
  type = list(object({
    port     = number
    protocol = optional(string, "tcp")
    cidrs    = optional(list(string), ["0.0.0.0/0"])
  }))
  default = []

  validation {
    condition     = alltrue([for s in var.services : s.port >= 1 && s.port <= 65535 && floor(s.port) == s.port && contains(["tcp", "udp"], s.protocol)])
    error_message = "every services[] needs a port in 1..65535 and protocol tcp or udp."
  }
  validation {
    condition     = alltrue([for s in var.services : !contains([3784, 11111, 22222], s.port)])
    error_message = "services[].port must not be 3784 (BFD), 11111 (API) or 22222 (sync): those stay between the nodes and the admins."
  }
  validation {
    condition     = alltrue(flatten([for s in var.services : [for c in s.cidrs : can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,2}$", c)) && can(cidrhost(c, 0))]]))
    error_message = "services[].cidrs must be IPv4 CIDRs."
  }
}

variable "health_port" {
  description = "Port of the agent's unauthenticated per-service health endpoint (--health-listen), GET /health/lb/{name}, for Route 53 health checks. null: off."
  type        = number
  default     = null

  validation {
    condition     = var.health_port == null || try(var.health_port >= 1024 && var.health_port <= 65535 && !contains([3784, 11111, 22222], var.health_port), false)
    error_message = "health_port must be 1024..65535 and none of 3784, 11111, 22222."
  }
}

variable "health_cidrs" {
  description = "Who may reach health_port (e.g. Route 53's health checkers' ranges)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.health_cidrs : can(regex("^([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,2}$", c)) && can(cidrhost(c, 0))])
    error_message = "health_cidrs must be IPv4 CIDRs."
  }
}

variable "services_config" {
  description = "A load-balancer list (loxilb format, JSON) written to /etc/floatlb/services.json (--config). null: an empty list (kube-loxilb creates the services through the API)."
  type        = string
  default     = null

  validation {
    condition     = var.services_config == null || can(jsondecode(var.services_config).lbAttr)
    error_message = "services_config must be JSON with an lbAttr list (the loxilb loadbalancer/all format)."
  }
}

variable "extra_flags" {
  description = "More agent flags, appended to FLOATLB_ARGS (e.g. --api-token-file=..., --xdp-mode=native)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for f in var.extra_flags : startswith(f, "--") && !strcontains(f, "\"") && !strcontains(f, " ") && !strcontains(f, "$") && !strcontains(f, "\n")])
    error_message = "extra_flags must be --flag[=value] items without quotes, spaces, $ or newlines."
  }
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}
