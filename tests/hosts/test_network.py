"""The network principal and every host's place on the internal networks, checked on running
hosts."""
import json
import subprocess
import sys

import pytest
from hostutil import links, run_ok

# What the outside side of the NAT runs: accept one connection, print the peer's address.
LISTENER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(1)
s.settimeout(float(sys.argv[2]))
print(s.getsockname()[1], flush=True)
conn, peer = s.accept()
print(peer[0], flush=True)
"""
LISTEN_SECONDS = 20


# --- names -----------------------------------------------------------------------------

def test_resolves_every_planned_host(source, connect, plan):
    """Through the gateway's dnsmasq: every planned host (up or not), short and FQDN, and
    the API's name."""
    expected = {h.name: str(h.address) for h in plan.hosts}
    expected.update({h.fqdn: str(h.address) for h in plan.hosts})
    expected[plan.api_name] = str(plan.api_vip)
    script = "; ".join(f"echo {name} $(getent ahostsv4 {name} | head -1 | cut -d' ' -f1)"
                       for name in expected)
    answers = dict(line.split(" ", 1) if " " in line else (line, "")
                   for line in run_ok(connect(source), script).splitlines())
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
    run_ok(host, f"ping -c 2 -i 0.2 -W 2 {peer.address}")


@pytest.fixture
def outside(plan):
    """A one-connection TCP listener on the outside side of the gateway's NAT (the lab
    machine's management address: in the container lab's namespace, or on libvirt's
    bridge), started here and killed by PID. Yields (port, process)."""
    from kubelab.providers import management_side
    proc = subprocess.Popen([*management_side(plan), sys.executable, "-c", LISTENER,
                             str(plan.management_host_ip), str(LISTEN_SECONDS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline() or 0)
        assert port, f"listener did not start: {proc.stderr.read()}"
        yield port, proc
    finally:
        proc.kill()
        proc.wait()


def test_reaches_the_outside_through_nat(client, connect, gateway, plan, outside):
    port, listener = outside
    host, nic = connect(client), client.nics[0]
    external = [a for a in links(gateway)[plan.gateway.mgmt.mac][1] if a in plan.management]
    device = links(host)[nic.mac][0]
    # Bound to the internal NIC: the management subnet is on-link for every host, so only
    # this way does the connection take the default route through the gateway.
    run_ok(host, f"python3 -c \"import socket; s = socket.socket(); "
                 f"s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'{device}'); "
                 f"s.settimeout(5); s.connect(('{plan.management_host_ip}', {port}))\"")
    peer, _ = listener.communicate(timeout=LISTEN_SECONDS)
    assert peer.strip() in external, \
        f"the outside saw {peer.strip()!r}, not the gateway's external address {external}"


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
