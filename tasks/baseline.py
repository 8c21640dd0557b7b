"""Every host's baseline: its name, its common packages, and networkd told to leave the
management NIC (the provider's) alone."""
from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.server import Hostname
from pyinfra.operations import files

from tasks.helpers import found_fact, put, render_files, restart_if_changed, will_ask

NAME = "Baseline"
GROUPS = ("gateway", "loadbalancers", "masters", "workers", "storage")
PACKAGES = ["sudo", "openssh-server", "python3", "chrony", "iproute2", "iputils-ping",
            "isc-dhcp-client", "ifupdown", "netcat-openbsd", "bind9-dnsutils", "kmod", "procps"]
FILES = {"/etc/systemd/networkd.conf.d/kubelab.conf": "baseline/networkd.conf.j2"}


def files_for(plan, me, secrets):
    return render_files(FILES, plan=plan, me=me, secrets=secrets)


def deploy(plan, me, secrets):
    will_ask(Hostname)
    host_name(name="Host name", hostname=me.name)
    fqdn_pattern = me.fqdn.replace(".", r"\.")     # grep's basic regular expression
    # The host's own name resolves to its lab address, as in DNS (not Debian's 127.0.1.1:
    # Kubernetes and etcd must never see a loopback address as the node's).
    files.line(name="FQDN in /etc/hosts", path="/etc/hosts",
               line=f"^[^ ]* {fqdn_pattern} ", replace=f"{me.address} {me.fqdn} {me.name}")
    changes = [put(dest, text) for dest, text in files_for(plan, me, secrets).items()]
    restart_if_changed("systemd-networkd", *changes)


@operation()
def host_name(hostname):
    """pyinfra's server.hostname for a host with systemd (every host here), in one round
    trip: pyinfra's also asks whether hostnamectl exists."""
    if found_fact(Hostname) == hostname:
        host.noop(f"the host's name is {hostname}")
        return
    yield f"hostnamectl set-hostname {hostname}"
