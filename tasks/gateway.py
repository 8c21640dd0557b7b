"""The network principal: routing, NAT and the firewall for the internal networks, dnsmasq
DNS + DHCP, the lab's time server.

Install -> configure (each config checked before it is put in place) -> activate (a service
restarts only when its config changed). Its legs come first: dnsmasq serves the networks the
gateway holds an address on.
"""
from kubelab.system import own_addresses
from tasks.helpers import (install_checked, internal_nics, in_container, nic_files, put,
                           render_files, restart_if_changed)

NAME = "Gateway"
GROUPS = ("gateway",)
PACKAGES = ["dnsmasq", "iptables", "iptables-persistent"]
# It routes between the internal networks and NATs them out (the seed's 10-gateway.conf).
SYSCTLS = {"net.ipv4.ip_forward": "1"}
RULES = "/etc/iptables/rules.v4"
DNSMASQ = "/etc/dnsmasq.d/kubelab.conf"
CHRONY = "/etc/chrony/chrony.conf"
FILES = {RULES: "gateway/rules.v4.j2", DNSMASQ: "gateway/dnsmasq.conf.j2",
         CHRONY: "gateway/chrony.conf.j2", "/etc/resolv.conf": "gateway/resolv.conf.j2",
         "/etc/dhcp/dhclient-enter-hooks.d/kubelab-mgmt": "gateway/dhclient-mgmt.j2"}
# dnsmasq reads every file of /etc/dnsmasq.d (Debian's default conf-dir, less its package
# leftovers): the candidate is checked together with them, in place of the live file.
DNSMASQ_CHECK = ('d=$(mktemp -d) && cp /etc/dnsmasq.d/* "$d"/ 2>/dev/null; '
                 'cp {candidate} "$d"/kubelab.conf && dnsmasq --test --conf-file=/etc/dnsmasq.conf '
                 '--conf-dir="$d",.dpkg-dist,.dpkg-old,.dpkg-new; rc=$?; rm -rf "$d"; [ $rc -eq 0 ]')
# How long the gateway waits for its static legs to come up.
LEG_WAIT_SECONDS = 60


def files_for(plan, me, secrets):
    return {**nic_files(plan, me, "gateway/leg.network.j2"),
            **render_files(FILES, plan=plan, me=me, secrets=secrets,
                           lab_machine=lab_machine_addresses(plan))}


def lab_machine_addresses(plan):
    """The addresses of the machine running the deploy (the lab machine) that the gateway
    must never forward to, read when the deploy starts: under libvirt this machine is the
    gateway's upstream router and takes every packet to one of its addresses as its own. Left
    out: those in a lab network (the lab routes them itself; the management network is
    refused whole) and the NAT check's outside address, which this machine holds only while
    that check runs."""
    lab = [plan.management, *(net.cidr for net in plan.networks)]
    return [address for address in own_addresses()
            if address != plan.outside and not any(address in net for net in lab)]


def deploy(plan, me, secrets):
    rendered = files_for(plan, me, secrets)
    internal_nics(me, nic_files(plan, me, "gateway/leg.network.j2"), LEG_WAIT_SECONDS)
    for dest in ("/etc/dhcp/dhclient-enter-hooks.d/kubelab-mgmt", "/etc/resolv.conf"):
        put(dest, rendered[dest])

    rules = install_checked(RULES, rendered[RULES], "iptables-restore --test")
    restart_if_changed("netfilter-persistent", rules)
    dnsmasq = install_checked(DNSMASQ, rendered[DNSMASQ], DNSMASQ_CHECK,
                              checker="dnsmasq --test")
    restart_if_changed("dnsmasq", dnsmasq)

    # A container runs on the lab machine's clock (chrony could not set it: Debian's unit
    # needs CAP_SYS_TIME); a VM gateway serves the lab's time.
    if not in_container():
        restart_if_changed("chrony", put(CHRONY, rendered[CHRONY]))
