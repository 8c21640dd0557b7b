"""Every host's baseline: name, packages, time, kernel settings, and its internal networks.

Two stages, because the internal NICs take their addresses from the gateway's DHCP:
`baseline` runs first everywhere; `internal_networks` runs on every host after the gateway
stage (deploy.py), and on the gateway itself at the start of its stage (static legs).
"""
from io import StringIO

from pyinfra import host
from pyinfra.api import OperationError, deploy, operation
from pyinfra.facts.server import Sysctl
from pyinfra.operations import apt, files, server, systemd

from kubelab.facts import Container, DefaultRoutes, Links
from kubelab.hostfiles import nic_path, nic_text, text
from kubelab.packages import ROLE_PACKAGES

# How long a host waits for its DHCP reservation before the deploy fails with a clear error.
DHCP_WAIT_SECONDS = 60


def put(plan, me, dest, mode="0644"):
    """Upload one of kubelab.hostfiles' files; the op tells whether it changed."""
    return files.put(name=f"Write {dest}", src=StringIO(text(plan, me, dest)), dest=dest,
                     user="root", group="root", mode=mode)


def restart_if_changed(service, *changes):
    """Restart a running service only when one of the ops changed something, then make sure
    it runs and starts at boot (a stopped one simply starts with the new config)."""
    systemd.service(name=f"Restart {service} (config changed)", service=service,
                    running=None, restarted=True,
                    _if=lambda: any(op.did_change() for op in changes))
    systemd.service(name=f"Run {service} now and at boot", service=service, running=True,
                    enabled=True)


def in_container():
    """Whether the host shares the lab machine's kernel (see kubelab.facts.Container): then
    its clock, kernel modules and non-namespaced sysctls are the lab machine's to set, not its
    own. Every container/VM difference in the deploy is decided here, from that fact."""
    return host.get_fact(Container) is not None


def _sysctls(plan, me):
    """{key: value} from the host's rendered sysctl file (the template is the one source)."""
    lines = text(plan, me, "/etc/sysctl.d/60-kubelab.conf").splitlines()
    return dict((k.strip(), v.strip()) for k, _, v in
                (line.partition("=") for line in lines if "=" in line and line[0] != "#"))


def _modules(plan, me):
    lines = text(plan, me, "/etc/modules-load.d/kubelab.conf").splitlines()
    return [line.strip() for line in lines if line.strip() and line[0] != "#"]


@deploy("Common baseline")
def baseline(plan, me):
    container = in_container()
    apt.packages(name="Common packages", packages=ROLE_PACKAGES["common"])
    server.hostname(name="Host name", hostname=me.name)
    fqdn_pattern = me.fqdn.replace(".", r"\.")     # grep's basic regular expression
    # The host's own name resolves to its lab address, as in DNS (not Debian's 127.0.1.1:
    # Kubernetes and etcd must never see a loopback address as the node's).
    files.line(name="FQDN in /etc/hosts", path="/etc/hosts",
               line=f"^[^ ]* {fqdn_pattern} ", replace=f"{me.address} {me.fqdn} {me.name}")

    # Time: a container runs on the lab machine's clock (chrony could not set it: Debian's
    # unit needs CAP_SYS_TIME); a VM syncs from the gateway, which serves the lab.
    if not container:
        conf = put(plan, me, "/etc/chrony/chrony.conf")
        restart_if_changed("chrony", conf)

    # Kernel: persisted for boot, and applied now where the host owns the setting.
    put(plan, me, "/etc/modules-load.d/kubelab.conf")
    put(plan, me, "/etc/sysctl.d/60-kubelab.conf")
    sysctls = _sysctls(plan, me)
    if container:
        # Only namespaced keys exist here (net.bridge.* only if the lab machine loaded
        # br_netfilter): apply those that exist, the rest is the lab machine's business.
        present = host.get_fact(Sysctl, keys=list(sysctls)) if sysctls else {}
        sysctls = {k: v for k, v in sysctls.items() if k in present}
    else:
        for module in _modules(plan, me):
            server.modprobe(name=f"Load kernel module {module}", module=module)
    for key, value in sysctls.items():
        server.sysctl(name=f"sysctl {key}", key=key, value=value)


@operation()
def address_up(mac, address, timeout):
    """Wait, at most `timeout` seconds, until the NIC with `mac` holds `address` (a DHCP
    reservation, or the gateway's static leg): never an unbounded wait for a gateway."""
    link = host.get_fact(Links).get(mac)
    if link is None:
        raise OperationError(f"no NIC with MAC {mac}: the provider did not create the NIC "
                             "the plan gives this host (re-create the host)")
    if any(a.split("/")[0] == address for a in link["ipv4"]):
        host.noop(f"{link['name']} ({mac}) holds {address}")
        return
    yield (f"for i in $(seq {timeout}); do ip -o -4 addr show dev {link['name']} | "
           f"grep -q ' inet {address}/' && exit 0; sleep 1; done; "
           f"echo '{link['name']} ({mac}) got no address {address} in {timeout} s: "
           "is the gateway up and its dnsmasq serving this network?' >&2; exit 1")


@operation()
def no_default_route_via(mac):
    """Remove a default route through the NIC with `mac` (the management NIC)."""
    name = host.get_fact(Links).get(mac, {}).get("name")
    for route in host.get_fact(DefaultRoutes):
        if name and route["dev"] == name:
            yield f"ip route del default dev {name}"
            return
    host.noop("no default route through the management NIC")


@deploy("Internal networks")
def internal_networks(plan, me):
    # Registered on every host from one line of deploy.py: this first op is where pyinfra
    # joins the hosts' op sequences, so no host's DHCP starts before the gateway stage ended.
    changes = [put(plan, me, "/etc/systemd/networkd.conf.d/kubelab.conf")]
    for nic in me.nics:
        changes.append(files.put(name=f"Write {nic_path(nic)}",
                                 src=StringIO(nic_text(plan, me, nic)), dest=nic_path(nic),
                                 user="root", group="root", mode="0644"))
    restart_if_changed("systemd-networkd", *changes)
    # Boot must never wait for a gateway that may be down (Debian enables it with networkd).
    systemd.service(name="Boot does not wait for the internal NICs",
                    service="systemd-networkd-wait-online", running=None, enabled=False)
    for nic in me.nics:
        address_up(name=f"{nic.network}: address {nic.address}", mac=nic.mac,
                          address=str(nic.address), timeout=DHCP_WAIT_SECONDS)
    put(plan, me, "/etc/dhcp/dhclient-enter-hooks.d/kubelab-mgmt")
    if me.group != "gateway":
        # The default route is now the gateway's (DHCP); the management NIC keeps its
        # on-link subnet, which is all SSH needs.
        no_default_route_via(name="Default route not through the management NIC",
                             mac=me.mgmt.mac)
    put(plan, me, "/etc/resolv.conf")
