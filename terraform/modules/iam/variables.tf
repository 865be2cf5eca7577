variable "cluster_name" {
  description = "The cluster's name: the value of the floatlb:cluster tag, and the agent's --cloud-cluster-name."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$", var.cluster_name))
    error_message = "cluster_name must be 1-63 characters of letters, digits, '.', '_' or '-', starting with a letter or digit (it is substituted into the policy's conditions)."
  }
}

variable "vpc_id" {
  description = "The VPC of the pair (substituted into the policy as vpc_id)."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123456789abcdef0."
  }
}

variable "policy_path" {
  description = "The policy template. The default is the repository's iam/policy.json, the one source of truth: never a copy."
  type        = string
  default     = null
}

variable "tag_network_interfaces" {
  description = "Interfaces the policy's conditions need tagged with floatlb:cluster: the instances' primary ENIs (route mode points routes at them and turns their source/dest check off). Keys are labels known at plan time (e.g. node0)."
  type        = map(string)
  default     = {}
}

variable "tag_route_tables" {
  description = "Route tables the policy's conditions need tagged with floatlb:cluster that this configuration does not create with the tag: route mode's --cloud-route-tables, ENI mode's instance-subnet tables. Keys are labels known at plan time."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for id in values(var.tag_route_tables) : can(regex("^rtb-[0-9a-f]{8,17}$", id))])
    error_message = "tag_route_tables values must be route table ids (rtb-...)."
  }
}

variable "tag_elastic_ips" {
  description = "Elastic IP allocations passed in (not allocated by the pair module) that need the floatlb:cluster tag. Keys are labels known at plan time."
  type        = map(string)
  default     = {}
}

variable "tags" {
  description = "Extra tags for the role and the instance profile."
  type        = map(string)
  default     = {}
}
