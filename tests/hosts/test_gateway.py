"""The gateway stage on a running lab: forwarding, NAT and firewall rules, dnsmasq; and each
denial of the firewall proven by behaviour, with a listener that is there (reachable from
the gateway itself) and saw nothing of the denied host."""
import re
from functools import cache

from hostutil import connect_from, connect_from_lab_side, links, run_ok

from kubelab.providers import management_side
from tasks import gateway as gateway_stage
from tasks.helpers import sysctl_path

# What a connection the gateway refuses meets: its icmp-admin-prohibited.
REFUSED = "EHOSTUNREACH"


def test_gateway_forwards_now_and_after_reboot(router, connect):
    gw = connect(router)
    assert run_ok(gw, "cat /proc/sys/net/ipv4/ip_forward").strip() == "1"
    assert "net.ipv4.ip_forward = 1" in gw.file(sysctl_path(gateway_stage)).content_string


def _rules(text):
    """The tables, chains and rules of iptables-restore text, as iptables-save writes them
    (no counters, no implicit -m tcp/udp)."""
    lines = [line for line in text.splitlines() if line.startswith(("*", ":", "-A", "COMMIT"))]
    return [re.sub(r" -m (tcp|udp)(?= )", "", re.sub(r" \[\d+:\d+\]$", "", line))
            for line in lines]


def test_gateway_firewall_nat_and_forward_rules(router, connect, plan):
    gw = connect(router)
    saved = gw.file(gateway_stage.RULES).content_string
    # What runs is what the deploy wrote, and netfilter-persistent loads it at boot.
    assert _rules(run_ok(gw, "iptables-save -t filter") + run_ok(gw, "iptables-save -t nat")) \
        == _rules(saved)
    assert gw.service("netfilter-persistent").is_enabled
    rules = _rules(saved)
    assert {":INPUT DROP", ":FORWARD DROP"} <= set(rules)
    assert f"-A FORWARD -d {plan.management} -j REJECT --reject-with icmp-admin-prohibited" \
        in rules
    for net in plan.networks:
        assert f"-A FORWARD -s {net.cidr} -j ACCEPT" in rules
        assert f"-A POSTROUTING -s {net.cidr} -j KUBELAB-NAT" in rules
        assert f"-A KUBELAB-NAT -d {net.cidr} -j RETURN" in rules
    assert "-A KUBELAB-NAT -j MASQUERADE" in rules


def test_dnsmasq_serves_every_internal_leg(router, connect, network):
    gw = connect(router)
    assert gw.service("dnsmasq").is_running and gw.service("dnsmasq").is_enabled
    for proto in ("udp", "tcp"):
        assert gw.socket(f"{proto}://{network.gateway}:53").is_listening
    assert gw.socket("udp://0.0.0.0:67").is_listening


# --- the firewall, by behaviour ---------------------------------------------------------

def internal_device(host, me):
    return links(host)[me.nics[0].mac][0]


def leg(plan, me):
    """The gateway's address on `me`'s network."""
    return plan.network(me.nics[0].network).gateway


def test_client_uses_the_gateways_services(client, connect, plan):
    """What the firewall lets through from the internal networks: DNS over UDP and TCP,
    ICMP (DHCP: each client's reservation; NTP: the time check, on VMs)."""
    host, server = connect(client), leg(plan, client)
    for transport in ("+notcp", "+tcp"):
        answer = run_ok(host, f"dig {transport} +short +time=3 +tries=1 @{server} "
                              f"{plan.gateway.fqdn}").split()
        assert answer == [str(plan.gateway.address)], (transport, answer)
    run_ok(host, f"ping -c 1 -W 3 {server}")


def refused_while_the_gateway_gets_through(host, me, gateway, address, listener, device):
    """`me` (lab host `host`) is refused at address:listener.port, where the gateway gets
    through, and the listener saw nothing of `me`."""
    said = connect_from(host, address, listener.port, me.name, device)
    assert said == REFUSED, said
    marker = f"gateway-for-{me.name}"
    assert connect_from(gateway, address, listener.port, marker).startswith("connected")
    seen = listener.seen()
    assert [m for _, m in seen if m in (me.name, marker)] == [marker], seen
    return seen


def test_client_cannot_reach_the_lab_machine(client, connect, gateway, plan, listeners):
    """From a client's internal NIC, the lab machine's management address is refused by the
    gateway; the listener there answers the gateway itself."""
    host = connect(client)
    listener = listeners.on_lab_side(management_side(plan), plan.management_host_ip)
    refused_while_the_gateway_gets_through(host, client, gateway, plan.management_host_ip,
                                           listener, internal_device(host, client))


def test_client_cannot_reach_another_hosts_management_address(pair, connect, gateway, plan,
                                                               listeners):
    """Through the gateway, never into the management network: another host's management
    address is refused; the listener there answers the gateway itself."""
    me, peer = pair
    host, other = connect(me), connect(peer)
    address = next(a for a in links(other)[peer.mgmt.mac][1] if a in plan.management)
    refused_while_the_gateway_gets_through(host, me, gateway, address,
                                           listeners.on(other, address),
                                           internal_device(host, me))


@cache
def _sshd_from_gateway(gateway, address):
    """What the gateway meets on its own sshd at `address`. Asked once per address (and
    pytest worker), as the next one: sshd's PerSourcePenalties refuse a source after about
    15 connections in a row that never log in ("Not allowed at this time")."""
    return connect_from(gateway, address, 22, "gateway")


@cache
def _sshd_from_lab_side(prefix, address):
    return connect_from_lab_side(list(prefix), address, 22, "lab-side")


def test_gateway_ssh_only_from_the_management_side(client, connect, gateway, plan):
    """sshd listens on every address of the gateway: its internal one refuses a client, while
    the gateway itself and the management side reach it."""
    host, server = connect(client), leg(plan, client)
    assert connect_from(host, server, 22, client.name) == REFUSED
    said = _sshd_from_gateway(gateway, server)
    assert said.startswith("connected SSH-2.0-"), said
    external = next(a for a in links(gateway)[plan.gateway.mgmt.mac][1]
                    if a in plan.management)
    said = _sshd_from_lab_side(tuple(management_side(plan)), external)
    assert said.startswith("connected SSH-2.0-"), said


def test_gateway_port_open_only_to_itself(client, connect, gateway, plan, listeners):
    """A service started on the gateway is out of the internal networks' reach, whatever
    its port: the client is refused, the gateway itself gets through."""
    host, server = connect(client), leg(plan, client)
    seen = refused_while_the_gateway_gets_through(host, client, gateway, server,
                                                  listeners.on(gateway, "0.0.0.0"), "")
    assert (str(server), f"gateway-for-{client.name}") in seen
