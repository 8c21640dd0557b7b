"""The load balancers, checked on running hosts: the corosync ring, pacemaker's resources,
HAProxy in front of every master, its stats page behind the lab's credentials."""
import base64
import hashlib
import re
import xml.etree.ElementTree as ET

from hostutil import run_ok

from kubelab.secrets import lab_secrets
from tasks import loadbalancers as stage
from tasks.helpers import sysctl_path

# Asks a URL on the host itself; prints the HTTP status (0: no answer).
GET = """python3 - <<'EOF'
import base64, urllib.error, urllib.request
request = urllib.request.Request({url!r})
if {auth!r}:
    request.add_header("Authorization", "Basic " + base64.b64encode({auth!r}.encode()).decode())
try:
    print(urllib.request.urlopen(request, timeout=5).status)
except urllib.error.HTTPError as err:
    print(err.code)
EOF"""


def lb_network(plan):
    return stage.network(plan)


SETTLE_SECONDS = 150    # for a cluster that has just booted: its controller election is 20 s


# The hosts whose cluster was seen settled in this session (this worker).
_settled = set()


def settled(host):
    """Wait (bounded) until the cluster has placed the VIP and finished its transitions (its
    coordinator idle), as it has a while after its nodes boot. Once per host and session:
    nothing unsettles it while the checks run. (Not crm_resource --wait: it takes 2 s even
    on a settled cluster.)"""
    if host in _settled:
        return
    run_ok(host, f"timeout {SETTLE_SECONDS} sh -c 'until crm_resource --locate --resource "
                 "api-vip 2>/dev/null | grep -q \"running on\" && crmadmin -S "
                 "\"$(crmadmin -q -D 2>&1)\" 2>/dev/null | grep -q S_IDLE; do sleep 0.2; "
                 "done'")
    _settled.add(host)


# --- corosync ---------------------------------------------------------------------------------

def test_corosync_ring_has_every_load_balancer_and_is_quorate(balancer, connect, plan):
    host = connect(balancer)
    settled(host)
    assert host.service("corosync").is_running and host.service("corosync").is_enabled
    quorum = run_ok(host, "corosync-quorumtool -s")
    assert re.search(r"^Quorate:\s+Yes$", quorum, re.M), quorum
    members = re.findall(r"^\s+\d+\s+\d+\s+(\S+)", quorum, re.M)
    assert sorted(members) == sorted(h.name for h in plan.group("loadbalancers")), quorum
    if len(plan.group("loadbalancers")) == 2:
        assert "2Node" in quorum
    # Every other node's link is up over knet.
    links = run_ok(host, "corosync-cfgtool -s")
    assert links.count("connected") >= len(plan.group("loadbalancers")) - 1, links
    assert "disconnected" not in links, links


def test_corosync_encrypts_with_the_lab_key(balancer, connect, plan):
    host = connect(balancer)
    conf = host.file(stage.COROSYNC).content_string
    for line in ("transport: knet", "crypto_cipher: aes256", "crypto_hash: sha256",
                 f"token: {plan.corosync_token_ms}"):
        assert line in conf
    key = host.file(stage.AUTHKEY)
    assert key.user == "root" and key.mode == 0o400
    expected = hashlib.sha256(base64.b64decode(lab_secrets(plan)["corosync_authkey"]))
    assert run_ok(host, f"sha256sum {stage.AUTHKEY}").split()[0] == expected.hexdigest()


# --- pacemaker --------------------------------------------------------------------------------

def cluster_status(host):
    return ET.fromstring(run_ok(host, "crm_mon -1 --output-as=xml"))


def test_pacemaker_runs_clean_with_every_node_online(balancer, connect, plan):
    host = connect(balancer)
    settled(host)
    assert host.service("pacemaker").is_running and host.service("pacemaker").is_enabled
    status = cluster_status(host)
    online = {n.get("name") for n in status.iter("node") if n.get("online") == "true"
              and n.get("standby") == "false"}
    assert online >= {h.name for h in plan.group("loadbalancers")}
    assert status.find("failures") is None or not list(status.find("failures")), \
        ET.tostring(status.find("failures")).decode()
    run_ok(host, "crm_verify -L")


def test_the_vip_is_held_by_exactly_one_node(balancer, connect, plan):
    """Pacemaker places the VIP on one node; that node, and no other, holds it."""
    host = connect(balancer)
    settled(host)
    located = run_ok(host, "crm_resource --locate --resource api-vip")
    holders = re.findall(r"running on: (\S+)", located)
    assert len(holders) == 1, located
    nic = balancer.nic(lb_network(plan))
    addresses = run_ok(host, f"ip -4 -o addr show | grep -i ' inet {plan.api_vip}/' || true")
    if holders[0] == balancer.name:
        # On the NIC with the planned MAC.
        name = addresses.split()[1]
        assert host.file(f"/sys/class/net/{name}/address").content_string.strip() == nic.mac
    else:
        assert addresses == ""


def test_haproxy_runs_on_every_load_balancer(balancer, connect):
    host = connect(balancer)
    settled(host)
    assert host.service("haproxy").is_running and host.service("haproxy").is_enabled
    located = run_ok(host, "crm_resource --locate --resource haproxy-clone")
    assert f"running on: {balancer.name}" in located, located


# --- HAProxy ----------------------------------------------------------------------------------

def test_haproxy_config_is_valid_and_binds_the_vip_anywhere(balancer, connect, plan):
    host = connect(balancer)
    run_ok(host, f"haproxy -c -f {stage.HAPROXY}")
    assert run_ok(host, "sysctl -n net.ipv4.ip_nonlocal_bind").strip() == "1"
    assert "net.ipv4.ip_nonlocal_bind = 1" in host.file(sysctl_path(stage)).content_string
    # Held or not, the VIP's port is bound: taking the VIP needs no restart.
    assert host.socket(f"tcp://{plan.api_vip}:{plan.api_port}").is_listening


def test_haproxy_lists_every_master_as_a_backend(balancer, connect, plan):
    """Every master, at its address; each is DOWN until a kube-apiserver (or the drill's
    stand-in) answers /readyz there."""
    host = connect(balancer)
    state = run_ok(host, "echo 'show servers state masters' | nc -U /run/haproxy/admin.sock")
    servers = {fields[3]: fields[4] for fields in (line.split() for line in state.splitlines())
               if len(fields) > 4 and fields[1] == "masters"}
    assert servers == {m.name: str(m.address) for m in plan.group("masters")}, state
    config = host.file(stage.HAPROXY).content_string
    assert "option httpchk GET /readyz" in config and "http-check expect status 200" in config
    assert "check check-ssl verify none" in config and "ssl-hello-chk" not in config


def test_the_vip_port_answers_from_another_network(vip_client, connect, plan):
    """A TCP connection to VIP:port from a host on another network, through the gateway,
    is accepted by HAProxy (with no master answering, HAProxy closes it at once). Bounded
    wait: after a boot the cluster places the VIP a while after SSH answers."""
    run_ok(connect(vip_client), f"timeout {SETTLE_SECONDS} sh -c 'until nc -z -w 2 "
                                f"{plan.api_vip} {plan.api_port}; do sleep 1; done'")


def test_stats_page_wants_the_lab_credentials(balancer, connect, plan):
    host = connect(balancer)
    secrets = lab_secrets(plan)
    address = balancer.nic(lb_network(plan)).address
    port = plan.stats_port
    url = f"http://{address}:{port}/stats"

    def status(auth):
        return run_ok(host, GET.format(url=url, auth=auth)).strip()
    assert status("") == "401"
    assert status(f"{secrets['haproxy_stats_user']}:not-the-password") == "401"
    assert status(f"{secrets['haproxy_stats_user']}:{secrets['haproxy_stats_password']}") == "200"
    # On the load balancers' network only.
    listening = run_ok(host, f"ss -Hltn 'sport = :{port}'").split("\n")
    assert [line.split()[3] for line in listening if line] == [f"{address}:{port}"]


def test_no_default_password(balancer, connect, plan):
    host = connect(balancer)
    auth = [line.split() for line in host.file(stage.HAPROXY).content_string.splitlines()
            if line.strip().startswith("stats auth")]
    secrets = lab_secrets(plan)
    assert [a[2] for a in auth] == \
        [f"{secrets['haproxy_stats_user']}:{secrets['haproxy_stats_password']}"]
    assert len(secrets["haproxy_stats_password"]) >= 20
    assert not re.search(r"admin:admin|:password\b|:haproxy\b", host.file(stage.HAPROXY)
                         .content_string)
