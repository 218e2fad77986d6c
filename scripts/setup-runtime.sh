#!/usr/bin/env bash
# Debian packages the cloud itself uses at run time, installed when missing (as root, or
# with sudo). Without them onestack still starts and says what it falls back to.
set -u
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# The noVNC browser client the compute console proxy serves (npm package, not committed).
NOVNC_DIR=${ONESTACK_NOVNC_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/onestack/novnc}
install_novnc() {
  [ -f "$NOVNC_DIR/core/rfb.js" ] && return 0
  command -v npm >/dev/null || { echo "warning: npm missing: no noVNC console page" >&2; return 0; }
  local tmp; tmp=$(mktemp -d)
  if (cd "$tmp" && npm pack --silent @novnc/novnc >/dev/null 2>&1 && tar xzf novnc-novnc-*.tgz); then
    mkdir -p "$(dirname "$NOVNC_DIR")" && rm -rf "$NOVNC_DIR" && mv "$tmp/package" "$NOVNC_DIR"
  else
    echo "warning: npm pack @novnc/novnc failed: no noVNC console page" >&2
  fi
  rm -rf "$tmp"
}

missing=()
command -v qemu-img >/dev/null || missing+=(qemu-utils)   # image inspection: virtual sizes
command -v qemu-storage-daemon >/dev/null || missing+=(qemu-system-common)   # volume NBD exports
# The linuxbridge network data plane (used when running as root), and what its system test
# puts in the stand-in guests (DHCP client, ping, HTTP to the metadata proxy).
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || missing+=(nftables)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
command -v radvd >/dev/null || missing+=(radvd)   # IPv6 router advertisements in qrouter-*
command -v conntrack >/dev/null || missing+=(conntrack)   # cutting flows a removed rule allowed
command -v busybox >/dev/null || missing+=(busybox-static)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v curl >/dev/null || missing+=(curl)
# The IPv6 system test's guests: a DHCPv6 client and a router-advertisement reader.
command -v dhclient >/dev/null || missing+=(isc-dhcp-client)
command -v rdisc6 >/dev/null || missing+=(ndisc6)
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)   # real guests
command -v genisoimage >/dev/null || missing+=(genisoimage)   # config drives
# The system test that loads the noVNC console page in a headless browser.
command -v chromium >/dev/null || missing+=(chromium)
# onestack guest-image build: busybox-static, the syslinux boot loader, FAT tools.
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v syslinux >/dev/null || missing+=(syslinux)
[ -e /usr/lib/syslinux/mbr/mbr.bin ] || missing+=(syslinux-common)
command -v mcopy >/dev/null || missing+=(mtools)
command -v mkfs.fat >/dev/null || missing+=(dosfstools)
install_novnc
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
  { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; } ||
  echo "warning: could not install ${missing[*]}" >&2
exit 0
