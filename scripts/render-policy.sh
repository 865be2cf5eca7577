#!/usr/bin/env bash
# Renders iam/policy.json for one cluster: replaces every ${name} by its value,
# exactly what Terraform's templatefile("iam/policy.json", {...}) does.
#
#   scripts/render-policy.sh CLUSTER_NAME VPC_ID [PARTITION] > policy.json
#
# CLUSTER_NAME is the --cloud-cluster-name value (the floatlb:cluster tag),
# VPC_ID the pair's VPC (vpc-...), PARTITION aws (default), aws-cn or aws-us-gov.
set -euo pipefail
usage() { echo "usage: $0 CLUSTER_NAME VPC_ID [PARTITION]" >&2; exit 2; }
if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
cluster=$1 vpc=$2 partition=${3:-aws}
[[ $cluster =~ ^[A-Za-z0-9_.:/=+@-]{1,256}$ ]] \
  || { echo "render-policy: invalid CLUSTER_NAME = '$cluster': use letters, digits and _ . : / = + @ - (an EC2 tag value)" >&2; exit 2; }
[[ $vpc =~ ^vpc-[0-9a-f]{8,17}$ ]] \
  || { echo "render-policy: invalid VPC_ID = '$vpc': expected vpc- and 8 or 17 hex digits" >&2; exit 2; }
[[ $partition =~ ^aws(-cn|-us-gov|-iso|-iso-b)?$ ]] \
  || { echo "render-policy: invalid PARTITION = '$partition': expected aws, aws-cn or aws-us-gov" >&2; exit 2; }
policy="$(dirname "$0")/../iam/policy.json"
out=$(sed -e "s|\${cluster_name}|$cluster|g" -e "s|\${vpc_id}|$vpc|g" -e "s|\${partition}|$partition|g" "$policy")
# shellcheck disable=SC2016 # a literal ${ is what is searched for
if grep -q '\${' <<<"$out"; then
  echo "render-policy: iam/policy.json has a placeholder this script does not know: $(grep -o '\${[^}]*}' <<<"$out" | sort -u | tr '\n' ' ')" >&2
  exit 1
fi
printf '%s\n' "$out"
