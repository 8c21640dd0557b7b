"""kubelab provision / verify: which hosts they run on, and how a deploy's result is read."""
import json
import os
import re
import subprocess
import sys

import pytest

from kubelab import paths, provision, stacks, vagrant
from kubelab.errors import LabError
from kubelab.inventory import not_up_warning, checks_connection
from kubelab.paths import DEFAULT_SPEC, REPO
from kubelab.system import run as real_run
from kubelab.plan import load_plan
from kubelab.provision import ProvisionError, pyinfra_command, totals, up_hosts, verify_command


def test_totals_read_pyinfra_results():
    changed = "    Operation  Hosts  Success  Error  No Change\n" \
              "    Grand total   176     148       -       28          \n"
    unchanged = "    Grand total                  106     -         -       106\n"
    assert totals(changed) == {"hosts": 176, "changed": 148, "errors": 0, "unchanged": 28}
    assert totals(unchanged) == {"hosts": 106, "changed": 0, "errors": 0, "unchanged": 106}
    assert totals("--> An internal exception occurred\n") is None


def test_runs_on_the_hosts_of_the_labs_ssh_config(tmp_path, monkeypatch):
    plan = load_plan(DEFAULT_SPEC)
    config = tmp_path / "ssh_config"
    config.write_text("Host hapx01\n    HostName x\n\nHost gateway\n    HostName y\n")
    monkeypatch.setenv("KUBELAB_SSH_CONFIG", str(config))
    monkeypatch.setattr(paths, "STATE", tmp_path)       # no lab recorded there
    monkeypatch.setattr(provision, "check_routes", lambda plan: None)  # tested below
    assert up_hosts(plan) == ["gateway", "hapx01"]      # plan order
    command = verify_command(plan)
    assert "--hosts=ssh://gateway,ssh://hapx01" in command
    assert f"--ssh-config={config}" in command


def test_no_lab_up_says_how_to_bring_it_up(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELAB_SSH_CONFIG", str(tmp_path / "missing"))
    with pytest.raises(ProvisionError, match="kubelab up"):
        up_hosts(load_plan(DEFAULT_SPEC))


def test_hosts_not_in_the_ssh_config_are_named_with_the_fix(tmp_path, monkeypatch):
    plan = load_plan(DEFAULT_SPEC)
    config = tmp_path / "ssh_config"
    monkeypatch.setenv("KUBELAB_SSH_CONFIG", str(config))
    warning = not_up_warning(plan)
    assert f"{len(plan.hosts)} host(s)" in warning and "vagrant ssh-config" in warning
    config.write_text("".join(f"Host {h.name}\n    HostName x\n" for h in plan.hosts[1:]))
    warning = not_up_warning(plan)
    assert f"1 host(s) of lab {plan.name}" in warning
    assert f"(not up?): {plan.gateway.name}." in warning
    config.write_text("".join(f"Host {h.name}\n" for h in plan.hosts))
    assert not_up_warning(plan) is None


def test_checks_reach_existing_machines_as_the_inventory_does(tmp_path):
    gateway = load_plan(DEFAULT_SPEC).gateway.name
    spec = tmp_path / "metal.yaml"
    spec.write_text(f"extends: {DEFAULT_SPEC}\nssh_hosts:\n  {gateway}: "
                    "{address: 198.51.100.7, user: admin, port: 2222, key: /k}\n")
    plan = load_plan(spec)
    config = tmp_path / "ssh_config"
    assert checks_connection(plan, plan.gateway, config) == \
        ("ssh://admin@198.51.100.7:2222", {"ssh_identity_file": "/k"})
    worker = plan.group("workers")[0]
    assert checks_connection(plan, worker, config) == \
        (f"ssh://{worker.name}", {"ssh_config": str(config)})
    # The gateway is reachable as it is: the list of hosts not up starts after it.
    assert f"(not up?): {plan.hosts[1].name}, " in not_up_warning(plan)


def test_pyinfra_debug_inventory_lists_the_plans_groups_and_host_data(tmp_path):
    """`pyinfra inventory.py debug-inventory`, as a user runs it (the default spec)."""
    plan = load_plan(DEFAULT_SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELAB_")}
    env["KUBELAB_STATE"] = str(tmp_path)        # a state dir with no lab up
    run = subprocess.run([*pyinfra_command(), "inventory.py", "debug-inventory"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr     # pyinfra logs to stderr when not on a terminal
    assert f"kubelab: {len(plan.hosts)} host(s) of lab {plan.name} are not in the ssh " \
           "config" in output      # no lab is up here: said before pyinfra connects
    hosts = dict(re.findall(r"^\[(\S+)\]\s*\n--> Groups: (.*)$", output, re.M))
    assert list(hosts) == [h.name for h in plan.hosts]
    for host in plan.hosts:
        groups = {g.strip() for g in hosts[host.name].split(",")}
        expected = {host.group, "inventory"}
        expected |= {"kubernetes"} if host.group in ("masters", "workers") else set()
        assert groups == expected, host.name
    gateway = plan.gateway
    data = json.loads(re.search(r"^\[gateway\].*?--> Data:\n(\{.*?^\})", output,
                                re.M | re.S).group(1))
    assert data["fqdn"] == gateway.fqdn and data["address"] == str(gateway.address)
    assert [n["mac"] for n in data["nics"]] == [n.mac for n in gateway.nics]


# --- a lab that is not up, or an ssh config that leads off this machine ---------------------

def fake_machine(routes, bridge="virbr7"):
    """`run` and `virsh` of a machine where `ip route get ADDRESS` names routes[ADDRESS]'s
    device and libvirt's management network of the lab has `bridge` (None: no network)."""
    def run(*cmd, check=True, **kwargs):
        if cmd[:2] == ("ip", "-j"):
            dev = routes[cmd[-1]]
            return subprocess.CompletedProcess(cmd, 0, json.dumps([{"dst": cmd[-1], "dev": dev}]),
                                               "")
        return real_run(*cmd, check=check, **kwargs)     # ssh -G reads the config only

    def virsh(*args):
        assert args[0] == "net-info"
        return f"Name: {args[1]}\nActive: yes\nBridge: {bridge}\n" if bridge else ""
    return run, virsh


def vm_ssh_config(path, addresses):
    path.write_text("".join(f"Host {name}\n  HostName {address}\n  User vagrant\n"
                            for name, address in addresses.items()))


def test_a_vm_lab_is_reached_only_over_its_own_management_bridge(tmp_path, monkeypatch):
    plan = load_plan(DEFAULT_SPEC)
    config = tmp_path / "ssh_config"
    monkeypatch.setenv("KUBELAB_SSH_CONFIG", str(config))
    vm_ssh_config(config, {"gateway": "192.168.121.10", "glus01": "192.168.121.11"})
    run, virsh = fake_machine({"192.168.121.10": "virbr7", "192.168.121.11": "virbr7"})
    monkeypatch.setattr(vagrant, "run", run)
    monkeypatch.setattr(vagrant, "virsh", virsh)
    assert up_hosts(plan) == ["gateway", "glus01"]

    # The VMs removed by `vagrant destroy`, the ssh config left: the default route.
    run, virsh = fake_machine({"192.168.121.10": "eth0", "192.168.121.11": "eth0"}, None)
    monkeypatch.setattr(vagrant, "run", run)
    monkeypatch.setattr(vagrant, "virsh", virsh)
    with pytest.raises(LabError) as err:
        up_hosts(plan)
    assert f"ssh config {config} sends glus01 (192.168.121.11) out through eth0" not in \
        str(err.value)      # the first host is named
    assert "gateway (192.168.121.10) out through eth0" in str(err.value)
    assert f"no network {plan.name}-mgmt" in str(err.value) and "kubelab up" in str(err.value)

    # Another lab's bridge holds the route: refused too.
    run, virsh = fake_machine({"192.168.121.10": "virbr3", "192.168.121.11": "virbr7"})
    monkeypatch.setattr(vagrant, "run", run)
    monkeypatch.setattr(vagrant, "virsh", virsh)
    with pytest.raises(LabError, match="out through virbr3, not the lab's management network "
                                       r"\(the lab's bridge is virbr7\)"):
        verify_command(plan)


def test_hosts_behind_a_proxycommand_or_on_this_machine_need_no_bridge(tmp_path, monkeypatch):
    plan = load_plan(DEFAULT_SPEC)
    config = tmp_path / "ssh_config"
    monkeypatch.setenv("KUBELAB_SSH_CONFIG", str(config))
    config.write_text("Host gateway\n  HostName 192.168.120.2\n  ProxyCommand ip netns exec "
                      "kubelab-x nc %h %p\n\nHost glus01\n  HostName 127.0.0.1\n  Port 2222\n")
    run, virsh = fake_machine({"127.0.0.1": "lo"}, None)
    monkeypatch.setattr(vagrant, "run", run)
    monkeypatch.setattr(vagrant, "virsh", virsh)
    assert up_hosts(plan) == ["gateway", "glus01"]


def test_a_lab_that_is_not_running_says_so_and_how_to_bring_it_up(tmp_path, monkeypatch):
    """The ssh config is there, the containers are not (the machine rebooted, say)."""
    monkeypatch.setattr(paths, "STATE", tmp_path)
    plan = load_plan(DEFAULT_SPEC)
    paths.provider_file(plan).write_text("nspawn\n")
    config = tmp_path / "ssh_config"
    monkeypatch.setenv("KUBELAB_SSH_CONFIG", str(config))
    config.write_text("Host gateway\n  HostName 192.168.120.2\n  ProxyCommand ip netns exec "
                      "kubelab-x nc %h %p\n")
    with pytest.raises(LabError) as err:
        up_hosts(plan)
    assert f"lab {plan.name} is not up: gateway (not created)" in str(err.value)
    assert "`kubelab up`" in str(err.value)


# A stand-in for pyinfra that waits forever in a greenlet, and in a child process of its own.
HANGING = """
import subprocess, gevent
from kubelab import stacks
stacks.install()
subprocess.Popen(["sleep", "300"])
print("--> Starting operation: Waiting forever", flush=True)
def waiting_for_a_host():
    gevent.sleep(300)
gevent.spawn(waiting_for_a_host).join()
"""


def test_a_deploy_over_its_time_says_where_it_waits_and_is_stopped(tmp_path):
    plan = load_plan(DEFAULT_SPEC)
    started = set(_sleeps())
    code, output, seconds = provision.deploy(
        plan, DEFAULT_SPEC, tmp_path / "log", hosts=["gateway"],
        launcher=[sys.executable, "-c", HANGING], timeout=3)
    assert code != 0 and seconds < 3 + provision.STACKS_SECONDS + 5, (code, seconds)
    assert "kubelab: where the deploy is" in output and "in waiting_for_a_host" in output, output
    assert output.endswith("kubelab: the deploy ran over its 3 s and was stopped "
                           "(where it waited is above)\n")
    assert (tmp_path / "log").read_text() == output
    # Shown of a long output: its last 100 characters before the stacks, then all of them.
    shown = provision.failure_output("x" * 9000 + output, size=100)
    assert shown.index(stacks.HEADER) == 100 and shown.endswith(output[output.index("--> "):])
    assert set(_sleeps()) <= started, "the deploy's child still runs"


def test_a_deploy_whose_child_keeps_its_output_open_is_stopped_at_its_time(tmp_path):
    """pyinfra ended, a process it started still holds the output: stopped all the same."""
    plan = load_plan(DEFAULT_SPEC)
    started = set(_sleeps())
    leaving = "import subprocess; subprocess.Popen(['sleep', '300'])"
    code, output, seconds = provision.deploy(
        plan, DEFAULT_SPEC, tmp_path / "log", hosts=["gateway"],
        launcher=[sys.executable, "-c", leaving], timeout=2)
    assert code != 0 and seconds < 2 + 5, (code, seconds)
    assert "the deploy ran over its 2 s" in output
    assert set(_sleeps()) <= started, "the deploy's child still runs"


def _sleeps():
    """PIDs of `sleep 300` processes."""
    ps = subprocess.run(["pgrep", "-x", "-f", "sleep 300"], capture_output=True, text=True)
    return ps.stdout.split()
