terraform {
  # 1.9: the modules use validation blocks that refer to other variables.
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Tested offline against 5.100.0 (the filesystem mirror `make test-deploy` uses).
      version = "~> 5.40"
    }
  }
}

provider "aws" {
  alias  = "primary"
  region = var.regions[0]
}

provider "aws" {
  alias  = "secondary"
  region = var.regions[1]
}
