variable "regions" {
  description = "Primary and secondary region."
  type        = list(string)
  default     = ["eu-west-1", "eu-central-1"]

  validation {
    condition     = length(var.regions) == 2 ? var.regions[0] != var.regions[1] : false
    error_message = "regions must be two different regions, primary first."
  }
}

variable "azs" {
  description = "Two Availability Zones per region, in the order of regions."
  type        = list(list(string))
  default     = [["eu-west-1a", "eu-west-1b"], ["eu-central-1a", "eu-central-1b"]]
}

variable "name" {
  description = "Name prefix; each region's cluster is NAME-REGION (IAM role names are global)."
  type        = string
  default     = "floatlb"
}

variable "vpc_cidrs" {
  description = "One VPC CIDR per region."
  type        = list(string)
  default     = ["10.10.0.0/16", "10.20.0.0/16"]
}

variable "cloud_cidr_blocks" {
  description = "ENI mode's --cloudcidrblock per region."
  type        = list(string)
  default     = ["10.110.0.0/28", "10.120.0.0/28"]
}

variable "service_name" {
  description = "The service the DNS name stands for: its per-service health endpoint is GET /health/lb/{service_name}."
  type        = string
  default     = "web"
}

variable "service_port" {
  description = "The service's port."
  type        = number
  default     = 443
}

variable "health_port" {
  description = "The agent's --health-listen port (unauthenticated, health endpoint only)."
  type        = number
  default     = 8080
}

variable "zone_id" {
  description = "Route 53 hosted zone of the record."
  type        = string
}

variable "record_name" {
  description = "The failover record (e.g. web.example.com)."
  type        = string
}

variable "admin_cidrs" {
  description = "Operators' CIDRs, allowed to the API."
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
