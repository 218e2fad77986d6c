#!/bin/sh
# The guest's boot script (busybox init runs it once): devices, network, metadata, marker.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp /mnt/config /root/.ssh /var/log /var/run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
for module in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$module.ko" 2>/dev/null
done
hostname onestack-guest
ip link set lo up
# The ACPI power button (soft reboot, stop) powers the guest off cleanly.
acpid

iface=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
    for dev in /sys/class/net/eth*; do
        [ -e "$dev" ] && iface=${dev##*/} && break 2
    done
    sleep 0.5
done
if [ -n "$iface" ]; then
    ip link set "$iface" up
    # Stays in the background renewing the lease; gives up after ~20 s without one.
    # Option 121 carries the route to 169.254.169.254 on networks without a router.
    udhcpc -i "$iface" -t 10 -T 2 -n -O staticroutes -s /etc/udhcpc.sh >/dev/null 2>&1
fi

meta=""
source=none
for _ in 1 2 3 4 5 6; do
    drive=$(findfs LABEL=config-2 2>/dev/null)
    [ -n "$drive" ] && break
    sleep 0.5
done
if [ -n "$drive" ] && mount -t iso9660 -o ro "$drive" /mnt/config 2>/dev/null; then
    meta=$(cat /mnt/config/openstack/latest/meta_data.json 2>/dev/null)
    [ -n "$meta" ] && source=configdrive
fi
if [ -z "$meta" ] && [ -n "$iface" ]; then
    for _ in 1 2 3 4 5; do
        # busybox-static's wget crashes with -T: timeout bounds it instead; the explicit
        # port spares it the (crashing, static) service name lookup.
        meta=$(timeout 8 wget -q -O - http://169.254.169.254:80/openstack/latest/meta_data.json \
            2>/dev/null)
        [ -n "$meta" ] && source=metadata && break
        sleep 2
    done
fi

field() { echo "$meta" | sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }
uuid=$(field uuid)
name=$(field hostname)
key=$(echo "$meta" | sed -n 's/.*"public_keys": *{ *"[^"]*": *"\([^"]*\)".*/\1/p')
[ -n "$name" ] && hostname "$name"
fingerprint=none
if [ -n "$key" ]; then
    echo "$key" > /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
    fingerprint=$(echo "$key" | cut -d' ' -f2 | base64 -d 2>/dev/null | md5sum | cut -c1-32 |
        sed 's/../&:/g; s/:$//')
fi
ip=$([ -n "$iface" ] && ip -4 -o addr show dev "$iface" 2>/dev/null | sed -n 's/.* inet \([0-9.]*\).*/\1/p' |
    head -n 1)
echo "onestack-guest ready id=${uuid:-none} name=$(hostname) ip=${ip:-none} key=$fingerprint source=$source"
