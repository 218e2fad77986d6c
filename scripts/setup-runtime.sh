#!/usr/bin/env bash
# Debian packages the cloud itself uses at run time, installed when missing (as root, or
# with sudo). Without them onestack still starts and says what it falls back to.
set -u
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

missing=()
command -v qemu-img >/dev/null || missing+=(qemu-utils)   # image inspection: virtual sizes
command -v qemu-storage-daemon >/dev/null || missing+=(qemu-system-common)   # volume NBD exports
# The linuxbridge network data plane (used when running as root), and what its system test
# puts in the stand-in guests (DHCP client, ping, HTTP to the metadata proxy).
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
command -v busybox >/dev/null || missing+=(busybox-static)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v curl >/dev/null || missing+=(curl)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
  { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
  echo "warning: could not install ${missing[*]}" >&2
exit 0
