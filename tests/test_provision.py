"""kubelab provision / verify: which hosts they run on, and how a deploy's result is read."""
import json
import os
import re
import subprocess

import pytest

from kubelab.inventory import not_up_warning, checks_connection
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
