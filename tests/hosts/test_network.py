"""The network principal and every host's place on the internal networks, checked on running
hosts."""
import fcntl
import json
import os
import shlex
import subprocess
from contextlib import contextmanager

import pytest
from hostutil import connect_from, links, listening_on_lab_side, run_ok

from kubelab.paths import lab_dir
from kubelab.providers import management_side

# --- names -----------------------------------------------------------------------------

# Each name and its first IPv4 address (as `getent ahostsv4` gives them: the host's resolver),
# or the name alone when it does not resolve.
RESOLVE = """
import socket, sys
for name in sys.argv[1:]:
    try:
        print(name, socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0])
    except OSError:
        print(name)
"""


def test_resolves_every_planned_host(source, connect, plan):
    """Through the gateway's dnsmasq: every planned host (up or not), short and FQDN, and
    the API's name."""
    expected = {h.name: str(h.address) for h in plan.hosts}
    expected.update({h.fqdn: str(h.address) for h in plan.hosts})
    expected[plan.api_name] = str(plan.api_vip)
    # One process for every name (getent, head and cut per name made it 3 x 2n processes).
    answers = dict(line.split(" ", 1) if " " in line else (line, "")
                   for line in run_ok(connect(source), f"python3 -c {shlex.quote(RESOLVE)} "
                                                       f"{' '.join(expected)}").splitlines())
    wrong = {n: (answers.get(n), a) for n, a in expected.items() if answers.get(n) != a}
    assert not wrong, f"name: (got, planned) {wrong}"


# --- hosts on the internal networks ---------------------------------------------------------

def test_holds_its_reservation_from_dhcp(client, connect, gateway, plan):
    host, nic = connect(client), client.nics[0]
    by_mac = links(host)
    assert nic.mac in by_mac, f"no NIC with the planned MAC {nic.mac}"
    name, addresses = by_mac[nic.mac]
    assert str(nic.address) in addresses
    # The address came from the gateway's dnsmasq: its lease names this MAC.
    leases = run_ok(gateway, "cat /var/lib/misc/dnsmasq.leases").split("\n")
    assert any(line.split()[1:4] == [nic.mac, str(nic.address), client.name]
               for line in leases if line.strip())
    # Its default route is the gateway's leg; the management NIC keeps its own subnet.
    routes = json.loads(run_ok(host, "ip -j -4 route show default"))
    assert routes == [{"dst": "default", "gateway": str(plan.network(nic.network).gateway),
                       "dev": name, "protocol": "dhcp", "prefsrc": str(nic.address),
                       "metric": 1024, "flags": []}]
    # (The provider gives the management address: libvirt's DHCP need not follow the plan.)
    _, mgmt_addresses = by_mac[client.mgmt.mac]
    assert [a for a in mgmt_addresses if a in plan.management]


def test_reaches_another_network_through_the_gateway(pair, connect, plan):
    me, peer = pair
    host = connect(me)
    route = json.loads(run_ok(host, f"ip -j route get {peer.address}"))[0]
    assert route["gateway"] == str(plan.network(me.nics[0].network).gateway)
    run_ok(host, f"ping -c 2 -i 0.05 -W 2 {peer.address}")


def _route(prefix, address):
    """`ip route get address` on this machine's side of the lab: (type, gateway, device)."""
    run = subprocess.run([*prefix, "ip", "-j", "route", "get", str(address)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        return None, None, None     # no route at all (the container lab's namespace)
    route = json.loads(run.stdout)[0]
    return route.get("type", "unicast"), route.get("gateway"), route.get("dev")


@contextmanager
def outside_address(plan):
    """plan.outside on a link of its own (a bridge without ports: this machine's kernel has no
    dummy driver) on this machine's side of the lab, for the check's
    duration only: in the container lab's namespace (which routes nothing off the machine),
    or (VMs) in this machine's own, where a packet to an address it does not hold follows the
    default route off the machine. So it is put there only if no network this machine is on
    holds it (it would take a neighbour's place, such as its router's), and used only once
    `ip route get` says it is local. One check at a time per lab (checks run in parallel)."""
    with open(lab_dir(plan) / "outside.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with _held_outside(plan) as prefix:
            yield prefix


@contextmanager
def _held_outside(plan):
    prefix = management_side(plan)
    kind, via, device = _route(prefix, plan.outside)
    if kind == "local" or (device and not via):
        where = "held by" if kind == "local" else "on a network of"
        pytest.fail(f"management.outside {plan.outside} is {where} this machine ({device}): "
                    "pick another address outside every network it is on (the spec's "
                    "management.outside)")
    link = f"kl-out{os.getpid()}"[:15]
    ip = [*prefix, "ip"]
    subprocess.run([*ip, "link", "add", link, "type", "bridge"], check=True)
    try:
        subprocess.run([*ip, "addr", "add", f"{plan.outside}/32", "dev", link], check=True)
        subprocess.run([*ip, "link", "set", link, "up"], check=True)
        kind, _, device = _route(prefix, plan.outside)
        assert kind == "local", (f"{plan.outside} on {link} is not local to this machine "
                                 f"(route: {kind} via {device}): a packet to it would leave "
                                 "the machine; stopped")
        yield prefix
    finally:
        subprocess.run([*ip, "link", "del", link], check=True)


def test_reaches_the_outside_through_nat(client, connect, gateway, plan):
    """A connection from a client's internal NIC to the outside address comes out of the
    gateway's NAT with the gateway's external address."""
    host, nic = connect(client), client.nics[0]
    external = [a for a in links(gateway)[plan.gateway.mgmt.mac][1] if a in plan.management]
    device = links(host)[nic.mac][0]
    with outside_address(plan) as prefix, \
            listening_on_lab_side(prefix, plan.outside) as listener:
        said = connect_from(host, plan.outside, listener.port, client.name, device)
        assert said.startswith("connected"), said
        seen = listener.seen()
    assert len(seen) == 1 and seen[0][1] == client.name, seen
    assert seen[0][0] in external, \
        f"the outside saw {seen[0][0]!r}, not the gateway's external address {external}"


# --- time -----------------------------------------------------------------------------------

def test_time_comes_from_the_gateway(source, connect, plan):
    """A VM's chrony synchronises with the gateway, which serves the lab from its own clock. A
    container runs on the lab machine's clock: the deploy leaves chrony off there."""
    host = connect(source)
    if host.run("systemd-detect-virt --container").rc == 0:
        assert not host.service("chrony").is_running
        return
    assert host.service("chrony").is_running and host.service("chrony").is_enabled
    if source.group == "gateway":
        assert host.socket("udp://0.0.0.0:123").is_listening
        return
    server = str(plan.network(source.nics[0].network).gateway)
    # A burst of measurements now (the polls at start went out before the internal NIC had
    # its address), then wait, bounded, until the clock is synchronised to the gateway.
    run_ok(host, "chronyc burst 4/4 && chronyc waitsync 60 0 0 1")
    tracking = run_ok(host, "chronyc -n tracking")
    assert f"({server})" in tracking, tracking
