#!/usr/bin/env bash
# Runs OpenStack Tempest's API tests against a running onestack.
#
#   scripts/tempest.sh DATA_DIR [REGEX] [CONCURRENCY]
#
# DATA_DIR is the running cloud's data directory (its openrc names the URL and
# the admin credentials). The script builds a Tempest virtualenv apart from the
# project's (TEMPEST_VENV, default /work/tempest-venv), creates what the tests
# need when it is absent (two public images, an external network `public` with
# a subnet), writes a workspace with tempest.conf (TEMPEST_WORKSPACE, default
# DATA_DIR/tempest) whose feature flags follow docs/compatibility.md, and runs
# `tempest run --regex REGEX` (default '^tempest.api.identity').
# A light cloud for it: ONESTACK_NETWORK__DRIVER=noop onestack up --fake-hosts 2.
set -euo pipefail

data_dir=$(realpath "${1:?usage: $0 DATA_DIR [REGEX] [CONCURRENCY]}")
regex=${2:-^tempest.api.identity}
concurrency=${3:-1}
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${TEMPEST_VENV:-/work/tempest-venv}
workspace=${TEMPEST_WORKSPACE:-$data_dir/tempest}
openstack=$repo/.venv/bin/openstack

if [[ ! -x $venv/bin/tempest ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q tempest
fi

if [[ ! -f $workspace/.stestr.conf ]]; then
    "$venv/bin/tempest" init --workspace-path "$data_dir/tempest-workspace.yaml" "$workspace"
fi

# shellcheck source=/dev/null
source "$data_dir/openrc"

image_id() {
    local name=$1 id
    id=$($openstack image show -f value -c id "$name" 2>/dev/null || true)
    if [[ -z $id ]]; then
        local file=$workspace/etc/$name.img
        head -c 1048576 /dev/zero >"$file"
        id=$($openstack image create -f value -c id --file "$file" --disk-format raw \
            --container-format bare --public "$name")
    fi
    echo "$id"
}

mkdir -p "$workspace/etc" "$workspace/logs"
image_ref=$(image_id tempest-image)
image_ref_alt=$(image_id tempest-image-alt)
public_net=$($openstack network show -f value -c id public 2>/dev/null || true)
if [[ -z $public_net ]]; then
    public_net=$($openstack network create -f value -c id --external public)
    $openstack subnet create -f value -c id --network public --subnet-range 172.24.4.0/24 \
        --no-dhcp public-subnet >/dev/null
fi
# Devstack creates the role Swift's reseller admin holds; Tempest's quota tests need it.
$openstack role show ResellerAdmin >/dev/null 2>&1 || $openstack role create ResellerAdmin >/dev/null
token=$($openstack token issue -f value -c id)
base=${OS_AUTH_URL%/identity/v3}
object_apis=$(curl -sf "$base/object/info" |
    python3 -c 'import json, sys; print(",".join(sorted(json.load(sys.stdin))))')
network_extensions=$(curl -sf -H "X-Auth-Token: $token" "$base/network/v2.0/extensions" |
    python3 -c 'import json, sys; print(",".join(e["alias"] for e in json.load(sys.stdin)["extensions"]))')

cat >"$workspace/etc/tempest.conf" <<EOF
[DEFAULT]
log_dir = $workspace/logs
log_file = tempest.log

[auth]
use_dynamic_credentials = true
create_isolated_networks = true
admin_username = $OS_USERNAME
admin_password = $OS_PASSWORD
admin_project_name = $OS_PROJECT_NAME
admin_domain_name = Default
default_credentials_domain_name = Default

[identity]
uri_v3 = $OS_AUTH_URL
auth_version = v3
region = $OS_REGION_NAME
v3_endpoint_type = public

[identity-feature-enabled]
api_v2 = false
trust = false
access_rules = false
application_credentials = true
project_tags = true
domain_specific_drivers = false
security_compliance = false
external_idp = false

[image]
catalog_type = image

[image-feature-enabled]
import_image = true
os_glance_reserved = true

[network]
public_network_id = $public_net
floating_network_name = public
project_network_cidr = 10.100.0.0/16

[network-feature-enabled]
api_extensions = $network_extensions
ipv6 = true
ipv6_subnet_attributes = true
port_security = true

[compute]
image_ref = $image_ref
image_ref_alt = $image_ref_alt
flavor_ref = 1
flavor_ref_alt = 2
min_compute_nodes = 2
min_microversion = 2.1
max_microversion = 2.96
build_timeout = 120

[compute-feature-enabled]
resize = true
cold_migration = true
live_migration = true
console_output = true
vnc_console = false
spice_console = false
serial_console = false
rescue = true
suspend = true
pause = true
shelve = true
snapshot = true
change_password = false
interface_attach = true
config_drive = true
personality = false
swap_volume = true
volume_multiattach = true
attach_encrypted_volume = false
metadata_service = true

[volume]
catalog_type = volumev3
min_microversion = 3.0
max_microversion = 3.70
build_timeout = 120
vendor_name = onestack
storage_protocol = file

[volume-feature-enabled]
backup = true
snapshot = true
clone = true
manage_volume = false
manage_snapshot = false
extend_attached_volume = true
consistency_group = false

[object-storage]
operator_role = member
reseller_admin_role = ResellerAdmin

[object-storage-feature-enabled]
discoverability = true
container_sync = false
object_versioning = true
discoverable_apis = $object_apis

[validation]
run_validation = false

[service_available]
identity = true
glance = true
neutron = true
cinder = true
nova = true
swift = true
heat = false
horizon = false
EOF

cd "$workspace"
exec "$venv/bin/tempest" run --regex "$regex" --concurrency "$concurrency"
