"""Debian packages per role: the image pre-installs all of them (services disabled) and
each task module installs its own role's list, so the two cannot drift."""

ROLE_PACKAGES = {
    "common": ["sudo", "openssh-server", "python3", "chrony", "iproute2", "iputils-ping",
               "isc-dhcp-client", "ifupdown", "netcat-openbsd", "bind9-dnsutils", "kmod", "procps"],
    "gateway": ["dnsmasq", "iptables", "iptables-persistent"],
    "loadbalancers": ["haproxy", "pacemaker", "corosync", "crmsh", "resource-agents"],
    "storage": ["glusterfs-server", "glusterfs-client", "xfsprogs", "thin-provisioning-tools",
                "fuse3"],
    "kubernetes": ["glusterfs-client", "iptables", "conntrack", "socat", "ebtables"],
}


def all_packages():
    return sorted({p for packages in ROLE_PACKAGES.values() for p in packages})
