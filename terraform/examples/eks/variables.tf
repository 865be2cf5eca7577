variable "region" {
  description = "The EKS cluster's region."
  type        = string
  default     = "eu-west-1"
}

variable "eks_cluster_name" {
  description = "The existing EKS cluster the pair serves (its VPC is used)."
  type        = string
}

variable "cluster_name" {
  description = "The floatlb cluster's name (floatlb:cluster tag)."
  type        = string
  default     = "floatlb"
}

variable "subnets" {
  description = "Two new subnets for the pair in the EKS VPC, in two AZs."
  type = list(object({
    az   = string
    cidr = string
  }))
}

variable "cloud_cidr_block" {
  description = "ENI mode's --cloudcidrblock (a /28 outside the VPC's CIDRs; associated with the VPC here)."
  type        = string
  default     = "10.200.0.0/28"
}

variable "vip" {
  description = "The private VIP, a usable address of cloud_cidr_block (kube-loxilb --privateCIDR)."
  type        = string
  default     = "10.200.0.4"
}

variable "admin_cidrs" {
  description = "Operators' CIDRs, allowed to the API for floatctl."
  type        = list(string)
  default     = []
}

variable "service_ports" {
  description = "Ports of the LoadBalancer services, open to the world."
  type        = list(number)
  default     = [80, 443]
}

variable "floatlb_binary_url" {
  description = "HTTPS URL of the floatlb binary."
  type        = string
}

variable "floatlb_binary_sha256" {
  description = "Its SHA-256."
  type        = string
}

variable "role_assignment" {
  description = "\"kube-loxilb\": kube-loxilb assigns MASTER/BACKUP (--setRoles, no --ka); \"bfd\": the pair elects itself over BFD (--ka) and kube-loxilb runs without --setRoles."
  type        = string
  default     = "kube-loxilb"

  validation {
    condition     = contains(["bfd", "kube-loxilb"], var.role_assignment)
    error_message = "role_assignment must be \"bfd\" or \"kube-loxilb\"."
  }
}

variable "kube_loxilb_image" {
  description = "The kube-loxilb image."
  type        = string
  default     = "ghcr.io/loxilb-io/kube-loxilb:latest"
}
