# Offline tests of the pair module (mock AWS provider: no account, no network).
# `make test-deploy` runs them.

mock_provider "aws" {
  mock_data "aws_vpc" {
    defaults = {
      cidr_block              = "10.0.0.0/16"
      cidr_block_associations = [{ association_id = "vpc-cidr-assoc-1", cidr_block = "10.0.0.0/16", state = "associated" }]
    }
  }
  mock_data "aws_ssm_parameter" {
    defaults = { insecure_value = "ami-0123456789abcdef0" }
  }
  mock_data "aws_eip" {
    defaults = { public_ip = "198.51.100.7" }
  }
  mock_resource "aws_eip" {
    defaults = { public_ip = "203.0.113.10" }
  }
}

override_data {
  target = data.aws_subnet.node[0]
  values = { availability_zone = "eu-west-1a", vpc_id = "vpc-0123456789abcdef0", cidr_block = "10.0.1.0/24" }
}

override_data {
  target = data.aws_subnet.node[1]
  values = { availability_zone = "eu-west-1b", vpc_id = "vpc-0123456789abcdef0", cidr_block = "10.0.2.0/24" }
}

variables {
  cluster_name = "prod-a"
  vpc_id       = "vpc-0123456789abcdef0"
  nodes = [
    { subnet_id = "subnet-0aaaaaaaaaaaaaaa1", private_ip = "10.0.1.10" },
    { subnet_id = "subnet-0bbbbbbbbbbbbbbb2", private_ip = "10.0.2.10" },
  ]
  instance_profile_name = "prod-a-floatlb-node"
  floatlb_binary_url    = "https://artifacts.example.com/floatlb/0.1.0/floatlb"
  floatlb_binary_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
  mode                  = "eni"
  cloud_cidr_block      = "10.1.0.0/28"
  vip                   = "10.1.0.10"
  cluster_cidrs         = ["10.20.0.0/16"]
  admin_cidrs           = ["192.0.2.0/24"]
  services = [
    { port = 80 },
    { port = 53, protocol = "udp", cidrs = ["10.0.0.0/8", "172.16.0.0/12"] },
  ]
}

run "security_group_opens_each_port_only_to_who_needs_it" {
  command = apply

  # The whole set of ingress rules, as EC2 gets them: anything more (a port
  # open to the world, BFD from anywhere) fails this equality.
  assert {
    condition = { for k, r in aws_vpc_security_group_ingress_rule.pair : k => "${r.ip_protocol}/${r.from_port}-${r.to_port} from ${r.cidr_ipv4}" } == {
      "bfd-from-node0"                = "udp/3784-3784 from 10.0.1.10/32"
      "bfd-from-node1"                = "udp/3784-3784 from 10.0.2.10/32"
      "sync-from-node0"               = "tcp/22222-22222 from 10.0.1.10/32"
      "sync-from-node1"               = "tcp/22222-22222 from 10.0.2.10/32"
      "api-from-10.20.0.0/16"         = "tcp/11111-11111 from 10.20.0.0/16"
      "api-from-192.0.2.0/24"         = "tcp/11111-11111 from 192.0.2.0/24"
      "svc-tcp-80-from-0.0.0.0/0"     = "tcp/80-80 from 0.0.0.0/0"
      "svc-udp-53-from-10.0.0.0/8"    = "udp/53-53 from 10.0.0.0/8"
      "svc-udp-53-from-172.16.0.0/12" = "udp/53-53 from 172.16.0.0/12"
    }
    error_message = "the pair's ingress rules differ from BFD/sync between the nodes, API from cluster+admins, services from their CIDRs"
  }

  # ... and they all belong to the one group both instances carry, and to no other.
  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.pair : r.security_group_id == aws_security_group.pair.id])
    error_message = "an ingress rule is not in the pair's security group"
  }
  assert {
    condition     = alltrue([for n in aws_instance.node : n.vpc_security_group_ids == toset([aws_security_group.pair.id])])
    error_message = "each instance must carry exactly the pair's security group"
  }

  # Egress: the VPC, and HTTPS out; nothing else to the world.
  assert {
    condition = (
      "${aws_vpc_security_group_egress_rule.vpc.ip_protocol} to ${aws_vpc_security_group_egress_rule.vpc.cidr_ipv4}" == "-1 to 10.0.0.0/16" &&
      length(aws_vpc_security_group_egress_rule.endpoints) == 0 &&
      "${aws_vpc_security_group_egress_rule.https.ip_protocol}/${aws_vpc_security_group_egress_rule.https.from_port}-${aws_vpc_security_group_egress_rule.https.to_port} to ${aws_vpc_security_group_egress_rule.https.cidr_ipv4}" == "tcp/443-443 to 0.0.0.0/0"
    )
    error_message = "egress must be everything inside the VPC and tcp/443 outside"
  }
}

run "instances_imdsv2_source_dest_check_off_encrypted_two_azs" {
  command = apply

  assert {
    condition     = length(aws_instance.node) == 2
    error_message = "the pair is two instances"
  }
  assert {
    condition     = alltrue([for n in aws_instance.node : n.metadata_options[0].http_tokens == "required" && n.metadata_options[0].http_put_response_hop_limit == 1 && n.metadata_options[0].http_endpoint == "enabled"])
    error_message = "IMDSv2 must be required, with a hop limit of 1"
  }
  assert {
    condition     = alltrue([for n in aws_instance.node : n.source_dest_check == false])
    error_message = "source/dest check must be off on both instances"
  }
  assert {
    condition     = alltrue([for n in aws_instance.node : n.root_block_device[0].encrypted == true])
    error_message = "root volumes must be encrypted"
  }
  assert {
    condition     = [for n in aws_instance.node : n.private_ip] == ["10.0.1.10", "10.0.2.10"] && [for n in aws_instance.node : n.subnet_id] == ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0bbbbbbbbbbbbbbb2"]
    error_message = "node i must sit in nodes[i]'s subnet with nodes[i]'s address"
  }
  assert {
    condition     = alltrue([for n in aws_instance.node : n.tags["floatlb:cluster"] == "prod-a" && n.iam_instance_profile == "prod-a-floatlb-node"])
    error_message = "both instances carry the cluster tag and the instance profile"
  }
  # The EIP is allocated here and tagged (the module has no association: the agent moves it).
  assert {
    condition     = length(aws_eip.this) == 1 && aws_eip.this[0].tags["floatlb:cluster"] == "prod-a" && output.eip_public_ip == "203.0.113.10"
    error_message = "the pair must allocate one cluster-tagged EIP"
  }
}

run "eni_mode_bfd_flags_and_the_unit" {
  command = plan

  assert {
    condition = jsonencode(output.agent_args) == jsonencode([
      ["--cloud=aws", "--cloud-cluster-name=prod-a", "--cloudcidrblock=10.1.0.0/28", "--cluster=10.0.2.10", "--self=0", "--ka=10.0.2.10:10.0.1.10:100000", "--fib-lookup-iface=lo", "--ha-state-file=/var/lib/floatlb/ha-state.json", "--config=/etc/floatlb/services.json"],
      ["--cloud=aws", "--cloud-cluster-name=prod-a", "--cloudcidrblock=10.1.0.0/28", "--cluster=10.0.1.10", "--self=1", "--ka=10.0.1.10:10.0.2.10:100000", "--fib-lookup-iface=lo", "--ha-state-file=/var/lib/floatlb/ha-state.json", "--config=/etc/floatlb/services.json"],
    ])
    error_message = "each node's flags: --cluster is the peer, --self its number, --ka PEER:SELF:INTERVAL"
  }
  # user_data installs packaging/floatlb.service verbatim and these flags.
  assert {
    condition = alltrue([for i, u in output.user_data : (
      strcontains(u, file("${path.module}/../../../packaging/floatlb.service")) &&
      strcontains(u, "FLOATLB_ARGS=${join(" ", output.agent_args[i])}\n") &&
      strcontains(u, "sha256sum -c") && strcontains(u, "systemctl enable --now floatlb.service") &&
      strcontains(u, "<<'FLOATLB_CONFIG'\n{\"lbAttr\":[]}\nFLOATLB_CONFIG")
    )])
    error_message = "user_data must install packaging/floatlb.service and write the node's FLOATLB_ARGS"
  }
}

run "kube_loxilb_assigns_roles_no_bfd_flag" {
  command = plan
  variables {
    role_assignment = "kube-loxilb"
  }
  assert {
    condition     = alltrue([for a in output.agent_args : length([for f in a : f if startswith(f, "--ka")]) == 0 && contains(a, "--cloud=aws")])
    error_message = "with kube-loxilb assigning roles there is no --ka"
  }
}

run "route_mode_flags_and_passed_in_eip" {
  command = plan
  variables {
    mode              = "route"
    cloud_cidr_block  = null
    vip               = "192.168.100.10"
    route_table_ids   = ["rtb-0aaaaaaaaaaaaaaa1", "rtb-0bbbbbbbbbbbbbbb2"]
    create_eip        = false
    eip_allocation_id = "eipalloc-0123456789abcdef0"
  }
  assert {
    condition     = contains(output.agent_args[0], "--cloud-mode=route") && contains(output.agent_args[0], "--cloud-route-tables=rtb-0aaaaaaaaaaaaaaa1,rtb-0bbbbbbbbbbbbbbb2") && length([for f in output.agent_args[0] : f if startswith(f, "--cloudcidrblock")]) == 0
    error_message = "route mode passes --cloud-mode=route and the tables, no --cloudcidrblock"
  }
  assert {
    condition     = length(aws_eip.this) == 0 && output.eip_allocation_id == "eipalloc-0123456789abcdef0" && output.eip_public_ip == "198.51.100.7"
    error_message = "a passed-in EIP is used, not a new one"
  }
}

run "health_port_open_only_to_given_cidrs" {
  command = plan
  variables {
    health_port  = 8080
    health_cidrs = ["15.177.0.0/18"]
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.pair["health-from-15.177.0.0/18"].from_port == 8080 && length([for k, r in aws_vpc_security_group_ingress_rule.pair : k if r.from_port == 8080]) == 1
    error_message = "the health port is open to health_cidrs only"
  }
  assert {
    condition     = contains(output.agent_args[1], "--health-listen=0.0.0.0:8080")
    error_message = "--health-listen is passed"
  }
}

run "route_mode_refuses_a_vip_inside_the_vpc" {
  command = plan
  variables {
    mode             = "route"
    cloud_cidr_block = null
    vip              = "10.0.5.5"
    route_table_ids  = ["rtb-0aaaaaaaaaaaaaaa1"]
  }
  expect_failures = [aws_instance.node]
}

run "refuses_two_nodes_in_one_az" {
  command = plan
  override_data {
    target = data.aws_subnet.node[1]
    values = { availability_zone = "eu-west-1a", vpc_id = "vpc-0123456789abcdef0" }
  }
  expect_failures = [aws_instance.node]
}

run "refuses_the_api_open_to_the_world" {
  command = plan
  variables {
    admin_cidrs = ["0.0.0.0/0"]
  }
  expect_failures = [var.admin_cidrs]
}

run "refuses_an_eni_mode_vip_outside_the_block" {
  command = plan
  variables {
    vip = "10.1.0.15"
  }
  expect_failures = [var.vip]
}

run "refuses_a_passed_in_eip_without_create_eip_false" {
  command = plan
  variables {
    eip_allocation_id = "eipalloc-0123456789abcdef0"
  }
  expect_failures = [var.eip_allocation_id]
}

run "refuses_user_data_over_16_kib" {
  command = plan
  variables {
    services_config = jsonencode({ lbAttr = [for i in range(200) : { serviceArguments = { name = "svc-${i}", externalIP = "203.0.113.10", port = 1000 + i }, endpoints = [] }] })
  }
  expect_failures = [aws_instance.node]
}

run "refuses_a_service_on_the_bfd_port" {
  command = plan
  variables {
    services = [{ port = 3784, protocol = "udp" }]
  }
  expect_failures = [var.services]
}
