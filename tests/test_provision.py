"""kubelab provision / verify: which hosts they run on, and how a deploy's result is read."""
import json
import os
import re
import subprocess

import pytest

from kubelab.paths import DEFAULT_SPEC, REPO
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
    assert up_hosts(plan) == ["gateway", "hapx01"]      # plan order
    command = verify_command(plan)
    assert "--hosts=ssh://gateway,ssh://hapx01" in command
    assert f"--ssh-config={config}" in command


def test_no_lab_up_says_how_to_bring_it_up(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBELAB_SSH_CONFIG", str(tmp_path / "missing"))
    with pytest.raises(ProvisionError, match="kubelab up"):
        up_hosts(load_plan(DEFAULT_SPEC))


def test_pyinfra_debug_inventory_lists_the_plans_groups_and_host_data():
    """`pyinfra inventory.py debug-inventory`, as a user runs it (the default spec)."""
    plan = load_plan(DEFAULT_SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELAB_")}
    run = subprocess.run([*pyinfra_command(), "inventory.py", "debug-inventory"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    output = run.stdout + run.stderr     # pyinfra logs to stderr when not on a terminal
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
