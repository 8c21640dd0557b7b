"""The Kubernetes hosts (masters and workers). So far: what every node needs before
containerd and kubeadm: the Gluster client and the kernel settings of pod networking."""

NAME = "Kubernetes hosts"
GROUPS = ("masters", "workers")
PACKAGES = ["glusterfs-client", "iptables", "conntrack", "socat", "ebtables"]
# Pods' traffic crosses Linux bridges and must pass iptables (the seed's 10-kubernetes.conf).
MODULES = ["overlay", "br_netfilter"]
SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1",
           "net.bridge.bridge-nf-call-ip6tables": "1"}


def files_for(plan, me, secrets):
    return {}
