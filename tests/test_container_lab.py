"""The container lab (systemd-nspawn): pyinfra and testinfra reach every host over SSH, NICs
match the plan, the lab is isolated from the outside, a failed up leaves nothing behind.
(Gluster inside, and a destroy with its FUSE mounts up: tests/test_storage_lab.py.) Needs
root; CI runs it every time."""
import json
import os
import subprocess
import sys
import uuid

import pytest
import testinfra
from netaddr import IPNetwork

from kubelab import nspawn, paths
from kubelab.errors import LabError
from kubelab.paths import REPO
from kubelab.plan import load_plan
from kubelab.provision import pyinfra_command, totals
from tests.conftest import SMALL_SPEC, remove_killed_runs_labs

pytestmark = pytest.mark.lab


def nspawn_processes(plan):
    """Pids of the lab's systemd-nspawn processes, found by their machine names (not by the
    state dir the lab code looks for)."""
    prefix = f"--machine={plan.name}-"
    return [pid for pid, argv in nspawn._command_lines()
            if any(arg.startswith(prefix) for arg in argv)]


def infra(config, name):
    return testinfra.get_host(f"ssh://{name}", ssh_config=str(config), sudo=True)


def ip_json(*args):
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True,
                                     check=True).stdout or "[]")


# --- the session's lab (examples/small.yaml, every host) ------------------------------------

def test_pyinfra_runs_an_operation_on_every_host(container_lab, ssh_env):
    plan, config = container_lab
    marker, token = "/etc/kubelab-test-marker", uuid.uuid4().hex
    command = [*pyinfra_command(), "-y", "inventory.py", "files.line", f"path={marker}",
               f"line={token}"]
    changed = []
    for _ in range(2):      # the second run must find the line and change nothing
        run = subprocess.run(command, cwd=REPO, env=ssh_env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        changed.append(totals(run.stdout + run.stderr)["changed"])
    assert changed == [len(plan.hosts), 0]
    for host in plan.hosts:
        f = infra(config, host.name).file(marker)
        assert f.exists and f.user == "root"
        assert f.content_string.splitlines().count(token) == 1, host.name


def test_nics_have_the_planned_names_macs_and_management_address(container_lab):
    plan, config = container_lab
    for host in plan.hosts:
        h = infra(config, host.name)
        nics = [host.mgmt, *host.nics]
        assert sorted(h.check_output("ls /sys/class/net").split()) == \
            sorted(["lo"] + [n.device for n in nics])
        for nic in nics:
            assert h.file(f"/sys/class/net/{nic.device}/address").content_string.strip() \
                == nic.mac, f"{host.name} {nic.device}"
        assert str(host.mgmt.address) in h.interface("eth0").addresses
        # Internal NICs are the deploy's: the lab gives them no address.
        for nic in host.nics:
            assert h.interface(nic.device).addresses == [], f"{host.name} {nic.device}"


def test_hosts_come_up_clean(container_lab):
    """systemd runs, every host has its own machine-id and ed25519/ecdsa host keys only."""
    plan, config = container_lab
    ids = set()
    for host in plan.hosts:
        h = infra(config, host.name)
        assert h.run("systemctl is-system-running").stdout.strip() == "running", host.name
        ids.add(h.file("/etc/machine-id").content_string.strip())
        keys = h.check_output("ls /etc/ssh").split()
        assert "ssh_host_ed25519_key" in keys and "ssh_host_ecdsa_key" in keys
        assert "ssh_host_rsa_key" not in keys
        assert not h.service("dnsmasq").is_running and not h.service("glusterd").is_running
    assert len(ids) == len(plan.hosts)


def test_lab_is_isolated(container_lab):
    """Checked by inspecting routes and interfaces, never by sending packets from here."""
    plan, _ = container_lab
    ns = nspawn.lab_netns(plan)
    routes = ip_json("-n", ns, "route", "show", "table", "all")
    assert not [r for r in routes if r["dst"] == "default"]
    # Its only IPv4 route: the management network, on its bridge.
    v4 = [r for r in ip_json("-n", ns, "-4", "route", "show") if r.get("type") != "local"]
    assert [(IPNetwork(r["dst"]), r["dev"]) for r in v4] == \
        [(plan.management.cidr, nspawn.MGMT_BRIDGE)]
    forward = subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-n",
                              "net.ipv4.ip_forward"], capture_output=True, text=True, check=True)
    assert forward.stdout.strip() == "0"

    # Inside the namespace: loopback, our bridges, and one veth per container NIC, each on
    # the bridge of its network; no address on any internal bridge.
    links = {link["ifname"]: link for link in ip_json("-n", ns, "-d", "link", "show")}
    bridges = {"mgmt": nspawn.MGMT_BRIDGE, **{n.name: nspawn.bridge(n) for n in plan.networks}}
    ends = {nspawn.host_end(h, nic): bridges[nic.network]
            for h in plan.hosts for nic in [h.mgmt, *h.nics]}
    assert set(links) == {"lo", *bridges.values(), *ends}
    for end, br in ends.items():
        assert links[end]["linkinfo"]["info_kind"] == "veth" and links[end]["master"] == br
        assert "link_netnsid" in links[end]     # its peer is in a container's namespace
    addresses = {a["ifname"]: a.get("addr_info", []) for a in ip_json("-n", ns, "addr", "show")}
    for net in plan.networks:
        assert addresses[nspawn.bridge(net)] == []
    assert [a["local"] for a in addresses[nspawn.MGMT_BRIDGE]] == \
        [str(plan.management_host_ip)]

    # The root namespace holds none of the lab's interfaces, and no veth leads from it into
    # one of the lab's namespaces.
    root_links = ip_json("-d", "link", "show")
    assert not {link["ifname"] for link in root_links} & set(links) - {"lo"}
    lab_ids = set()
    for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith(ns) and "id:" in rest:
            lab_ids.add(int(rest.split("id:")[1].strip(" )")))
    assert not [link["ifname"] for link in root_links if link.get("link_netnsid") in lab_ids]


def test_up_refuses_a_lab_that_is_already_up(container_lab):
    plan, _ = container_lab
    with pytest.raises(nspawn.NspawnError, match="already up"):
        nspawn.up(plan)
    assert all(state.startswith("running") for _, state in nspawn.status(plan))


def test_up_refuses_unknown_hosts(container_lab):
    plan, _ = container_lab
    with pytest.raises(LabError, match="unknown host"):
        nspawn.up(plan, ["no-such-host"])


def test_a_failed_up_names_the_host_and_leaves_nothing(lab_state, spec_named, monkeypatch):
    """sshd made to never answer: up() fails naming the hosts, and removes what it made."""
    plan = load_plan(spec_named(f"-ft{os.getpid()}"))
    names = [plan.gateway.name, plan.group("storage")[0].name]
    monkeypatch.setattr(nspawn, "SSH_TIMEOUT", 2)
    monkeypatch.setattr(nspawn, "_ssh_answers", lambda config, host: False)
    with pytest.raises(nspawn.NspawnError, match="never answered") as err:
        nspawn.up(plan, names)
    assert all(name in str(err.value) for name in names)
    assert nspawn.leftovers(plan) == []


# --- a lab whose test run was killed ---------------------------------------------------------

KILLED_RUN = """
import os, sys, yaml
from kubelab import nspawn
from kubelab.plan import load_plan
spec = os.path.join(sys.argv[1], "killed.yaml")
with open(spec, "w") as out:
    yaml.safe_dump({"extends": sys.argv[2], "name": f"kubesmall-kt{os.getpid()}"}, out)
plan = load_plan(spec)
nspawn.up(plan, [plan.gateway.name])
print(plan.name, flush=True)
sys.stdin.read()
"""


def test_the_lab_of_a_killed_run_is_removed_by_the_next_one(lab_state, tmp_path_factory):
    """A run SIGKILLed with its lab up (no teardown): the next session's sweep leaves it alone
    while its process lives, and destroys it, leaving nothing, once it is dead."""
    tmp_path = tmp_path_factory.mktemp("kt")     # short: the lab's SSH sockets live there
    state = tmp_path / "state"
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path), str(SMALL_SPEC)],
                           cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO),
                                "KUBELAB_STATE": str(state)})
    try:
        name = run.stdout.readline().strip()
        assert name == f"kubesmall-kt{run.pid}", "the run's lab did not come up"
        plan = load_plan(tmp_path / "killed.yaml")
        assert nspawn.owned_labs()[name] == state / name
        assert name not in remove_killed_runs_labs(tmp_path, lab_state)
        with paths.state_at(state):
            assert any(s.startswith("running") for _, s in nspawn.status(plan))
    finally:
        run.kill()          # SIGKILL: nothing of the run's own cleanup runs
        run.wait()
    with paths.state_at(state):
        assert nspawn.leftovers(plan), "the killed run should have left its lab"
    assert name in remove_killed_runs_labs(tmp_path, lab_state)
    with paths.state_at(state):
        assert nspawn.leftovers(plan) == []
    assert nspawn_processes(plan) == []
    assert name not in nspawn.owned_labs()
