"""The gateway stage on a running lab: forwarding, NAT and firewall rules, dnsmasq."""
from hostutil import run_ok

from tasks import gateway as gateway_stage
from tasks.helpers import sysctl_path


def test_gateway_forwards_now_and_after_reboot(router, connect):
    gw = connect(router)
    assert run_ok(gw, "cat /proc/sys/net/ipv4/ip_forward").strip() == "1"
    assert "net.ipv4.ip_forward = 1" in gw.file(sysctl_path(gateway_stage)).content_string


def test_gateway_nat_and_forward_rules(router, connect, plan):
    gw = connect(router)
    nat = run_ok(gw, "iptables -t nat -S").splitlines()
    forward = run_ok(gw, "iptables -S FORWARD").splitlines()
    assert "-P FORWARD DROP" in forward
    assert "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" in forward
    for net in plan.networks:
        assert f"-A FORWARD -s {net.cidr} -j ACCEPT" in forward
        assert f"-A POSTROUTING -s {net.cidr} -j KUBELAB-NAT" in nat
        assert f"-A KUBELAB-NAT -d {net.cidr} -j RETURN" in nat
    assert nat[-1] == "-A KUBELAB-NAT -j MASQUERADE"
    # Persisted: netfilter-persistent loads the same rules at boot.
    assert gw.service("netfilter-persistent").is_enabled
    run_ok(gw, "iptables-restore --test /etc/iptables/rules.v4")
    saved = gw.file("/etc/iptables/rules.v4").content_string
    for net in plan.networks:
        assert f"-A POSTROUTING -s {net.cidr} -j KUBELAB-NAT" in saved


def test_dnsmasq_serves_every_internal_leg(router, connect, network):
    gw = connect(router)
    assert gw.service("dnsmasq").is_running and gw.service("dnsmasq").is_enabled
    for proto in ("udp", "tcp"):
        assert gw.socket(f"{proto}://{network.gateway}:53").is_listening
    assert gw.socket("udp://0.0.0.0:67").is_listening
