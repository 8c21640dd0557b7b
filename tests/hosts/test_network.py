"""The network principal and every host's place on the internal networks, checked on running
hosts."""
import json

from hostutil import connect_from, links, python_ok, run_ok
from outside import outside_address

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
                   for line in python_ok(connect(source), RESOLVE, *expected).splitlines())
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


def test_reaches_the_outside_through_nat(client, connect, gateway, plan, run, listeners):
    """A connection from a client's internal NIC to the outside address (outside.py) comes
    out of the gateway's NAT with the gateway's external address."""
    host, nic = connect(client), client.nics[0]
    external = [a for a in links(gateway)[plan.gateway.mgmt.mac][1] if a in plan.management]
    device = links(host)[nic.mac][0]
    listener = listeners.on_lab_side(outside_address(plan, run), plan.outside)
    said = connect_from(host, plan.outside, listener.port, client.name, device)
    assert said.startswith("connected"), said
    seen = [each for each in listener.seen() if each[1] == client.name]
    assert len(seen) == 1, seen
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
