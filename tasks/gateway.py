"""The network principal: routing and NAT for the internal networks, dnsmasq DNS + DHCP.

Install -> configure (each config checked before it is put in place) -> activate (a service
restarts only when its config changed).
"""
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files, server

from kubelab.facts import Sha256File
from kubelab.hostfiles import text
from kubelab.packages import ROLE_PACKAGES
from tasks import common

CANDIDATES = "/var/lib/kubelab"


def install_checked(plan, me, dest, check):
    """Upload a config beside its destination, run `check <candidate>` on it, and only when
    that passes copy it over `dest`. A bad config never reaches the service."""
    candidate = f"{CANDIDATES}/{dest.strip('/').replace('/', '_')}"
    files.put(name=f"Write candidate {candidate}", src=StringIO(text(plan, me, dest)),
              dest=candidate, user="root", group="root", mode="0644")
    return server.shell(
        name=f"Check ({check.split()[0]}) and install {dest}",
        commands=[f"{check} {candidate} && install -m 0644 {candidate} {dest}"],
        _if=lambda: host.get_fact(Sha256File, path=candidate)
        != host.get_fact(Sha256File, path=dest))


@deploy("Gateway")
def configure(plan, me):
    apt.packages(name="Gateway packages", packages=ROLE_PACKAGES["gateway"])
    # The legs first: dnsmasq serves the networks the gateway holds an address on.
    common.internal_networks(plan, me)
    files.directory(name=f"Directory {CANDIDATES}", path=CANDIDATES, mode="0700")

    # Forwarding (net.ipv4.ip_forward) is in the common baseline's sysctls for the gateway.
    rules = install_checked(plan, me, "/etc/iptables/rules.v4", "iptables-restore --test")
    common.restart_if_changed("netfilter-persistent", rules)

    dnsmasq = install_checked(plan, me, "/etc/dnsmasq.d/kubelab.conf", "dnsmasq --test -C")
    common.restart_if_changed("dnsmasq", dnsmasq)
