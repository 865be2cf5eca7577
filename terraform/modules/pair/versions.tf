terraform {
  # 1.9: validation blocks that refer to other variables; 1.7: mock_provider in tests.
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Tested offline against 5.100.0 (the filesystem mirror `make test-deploy` uses).
      version = "~> 5.40"
    }
  }
}
