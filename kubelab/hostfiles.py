"""The files the deploy writes on a host, rendered from the plan alone.

The deploy (tasks/) and offline rendering (`kubelab render`, benchmarks, unit tests) both
call these, so what lands on a host is exactly what can be inspected without one. Every
template gets `plan` and `me` (the planned Host); per-NIC files also get `nic` (one of me.nics).
"""
from kubelab.render import render

# Destination on the host -> template, for files every host gets.
COMMON = {
    "/etc/sysctl.d/60-kubelab.conf": "common/sysctl.conf.j2",
    "/etc/modules-load.d/kubelab.conf": "common/modules.conf.j2",
    "/etc/resolv.conf": "common/resolv.conf.j2",
    "/etc/chrony/chrony.conf": "common/chrony.conf.j2",
    "/etc/systemd/networkd.conf.d/kubelab.conf": "common/networkd.conf.j2",
    "/etc/dhcp/dhclient-enter-hooks.d/kubelab-mgmt": "common/dhclient-mgmt.j2",
}
GATEWAY = {
    "/etc/dnsmasq.d/kubelab.conf": "gateway/dnsmasq.conf.j2",
    "/etc/iptables/rules.v4": "gateway/rules.v4.j2",
}
NIC_TEMPLATE = "common/internal.network.j2"


def nic_path(nic):
    return f"/etc/systemd/network/20-kubelab-{nic.network}.network"


def text(plan, me, dest):
    """The rendered content of one of the COMMON or GATEWAY files for host `me`."""
    return render({**COMMON, **GATEWAY}[dest], plan=plan, me=me)


def nic_text(plan, me, nic):
    return render(NIC_TEMPLATE, plan=plan, me=me, nic=nic)


def host_files(plan, me):
    """{destination: content} of every file the deploy writes on host `me`."""
    files = {dest: text(plan, me, dest) for dest in COMMON}
    if me.group == "gateway":
        files.update({dest: text(plan, me, dest) for dest in GATEWAY})
    files.update({nic_path(nic): nic_text(plan, me, nic) for nic in me.nics})
    return files
