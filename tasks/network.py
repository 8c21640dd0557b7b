"""Every host but the gateway on the lab's internal network: its NIC's address from the
gateway's DHCP reservation, the gateway as default route, resolver and time server."""
from pyinfra import host
from pyinfra.api import operation

from kubelab.facts import DefaultRoutes, Links
from tasks.helpers import (found_fact, in_container, internal_nics, nic_files, put,
                           render_files, restart_if_changed, will_ask)

NAME = "Internal network"
GROUPS = ("loadbalancers", "masters", "workers", "storage")
PACKAGES = []
CHRONY = "/etc/chrony/chrony.conf"
FILES = {"/etc/dhcp/dhclient-enter-hooks.d/kubelab-mgmt": "network/dhclient-mgmt.j2",
         "/etc/resolv.conf": "network/resolv.conf.j2", CHRONY: "network/chrony.conf.j2"}
# How long a host waits for its DHCP reservation before the deploy fails with a clear error.
DHCP_WAIT_SECONDS = 60


def files_for(plan, me, secrets):
    return {**nic_files(plan, me, "network/dhcp.network.j2"),
            **render_files(FILES, plan=plan, me=me, secrets=secrets)}


@operation()
def no_default_route_via(mac):
    """Remove a default route through the NIC with `mac` (the management NIC)."""
    name = found_fact(Links).get(mac, {}).get("name")
    for route in found_fact(DefaultRoutes):
        if name and route["dev"] == name:
            yield f"ip route del default dev {name}"
            return
    host.noop("no default route through the management NIC")


def deploy(plan, me, secrets):
    rendered = files_for(plan, me, secrets)
    internal_nics(me, nic_files(plan, me, "network/dhcp.network.j2"), DHCP_WAIT_SECONDS)
    put("/etc/dhcp/dhclient-enter-hooks.d/kubelab-mgmt",
        rendered["/etc/dhcp/dhclient-enter-hooks.d/kubelab-mgmt"])
    # The default route is now the gateway's (DHCP); the management NIC keeps its on-link
    # subnet, which is all SSH needs.
    will_ask(DefaultRoutes)
    no_default_route_via(name="Default route not through the management NIC", mac=me.mgmt.mac)
    put("/etc/resolv.conf", rendered["/etc/resolv.conf"])
    # Time from the gateway; a container runs on the lab machine's clock instead.
    if not in_container():
        restart_if_changed("chrony", put(CHRONY, rendered[CHRONY]))
