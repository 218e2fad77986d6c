#!/bin/sh
# udhcpc's event script: applies the lease (address, routes incl. option 121, DNS).
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ;;
bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            if [ "$2" = "0.0.0.0" ]; then
                ip route replace "$1" dev "$interface"
            elif [ "$1" = "0.0.0.0/0" ]; then
                ip route replace default via "$2" dev "$interface"
            else
                ip route replace "$1" via "$2" dev "$interface"
            fi
            shift 2
        done
    elif [ -n "$router" ]; then
        for gateway in $router; do
            ip route replace default via "$gateway" dev "$interface" && break
        done
    fi
    : > /etc/resolv.conf
    for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf; done
    ;;
esac
exit 0
