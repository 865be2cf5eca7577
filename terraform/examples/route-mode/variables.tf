variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "cluster_name" {
  description = "The floatlb cluster's name (floatlb:cluster tag)."
  type        = string
  default     = "floatlb-route"
}

variable "vpc_cidr" {
  description = "The new VPC's CIDR."
  type        = string
  default     = "10.0.0.0/16"
}

variable "azs" {
  description = "The two Availability Zones."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b"]
}

variable "vip" {
  description = "The private VIP, outside the VPC's CIDR: route mode points VIP/32 at the MASTER."
  type        = string
  default     = "192.168.100.10"
}

variable "endpoints" {
  description = "The web service's endpoints (private IPs in the VPC) on port 8080."
  type        = list(string)
  default     = ["10.0.1.100", "10.0.2.100"]
}

variable "admin_cidrs" {
  description = "Operators' CIDRs, allowed to the API for floatctl."
  type        = list(string)
  default     = []
}

variable "floatlb_binary_url" {
  description = "HTTPS URL of the floatlb binary."
  type        = string
}

variable "floatlb_binary_sha256" {
  description = "Its SHA-256."
  type        = string
}
