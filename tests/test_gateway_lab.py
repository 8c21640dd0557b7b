"""The deploy on a real container lab (examples/small.yaml, under a lab name of this module's
own, so the session's untouched lab never sees a deployed host): the deploy from nothing,
every host check, a second deploy that changes nothing, the checks again; then every host
rebooted, the checks and a deploy that changes nothing. Prints the deploy and reboot times.
Needs root; CI runs it every time."""
import re
import subprocess
import time

import pytest

from kubelab import provision
from kubelab.paths import REPO

pytestmark = pytest.mark.lab


def deploy(env):
    """`pyinfra -y inventory.py deploy.py` -> (pyinfra's totals, output, seconds)."""
    start = time.monotonic()
    run = subprocess.run([*provision.pyinfra_command(), "-y", "inventory.py", "deploy.py"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - start
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    return provision.totals(output), output, seconds


def checks(plan, env):
    """Every host check on the lab: each collected check passes, but those of a Kubernetes
    cluster, which skip on containers (the Kubernetes stages skip them) and say so."""
    command = [*provision.verify_command(plan), "-rs"]
    collected = subprocess.run([*command, "--collect-only"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=300)
    expected = int(re.search(r"^(\d+)(?:/\d+)? tests? collected", collected.stdout,
                             re.M).group(1))
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    counts = re.match(r"^(\d+) passed(?:, (\d+) skipped)? in ", summary)
    assert counts, summary
    passed, skipped = int(counts.group(1)), int(counts.group(2) or 0)
    assert passed + skipped == expected, summary
    reasons = re.findall(r"^SKIPPED \[(\d+)\] (\S+):\d+: (.*)$", run.stdout, re.M)
    assert sum(int(n) for n, _, _ in reasons) == skipped
    assert all(where.endswith("test_kubernetes.py") and "container" in why
               for _, where, why in reasons), reasons
    return run.stdout


def test_gateway_and_baseline_deploy_check_and_rerun_without_change(gateway_lab, report):
    plan, ssh_env, _ = gateway_lab
    first, _, first_s = deploy(ssh_env)
    assert first["hosts"] and not first["errors"] and first["changed"], first
    passed = checks(plan, ssh_env)

    second, output, second_s = deploy(ssh_env)
    assert second["changed"] == 0 and not second["errors"], \
        "the second deploy changed something:\n" + "\n".join(
            line for line in output.splitlines() if "Success" in line or "|" in line)
    assert second["unchanged"] == first["changed"] + first["unchanged"]
    checks(plan, ssh_env)
    report(f"deploy on {len(plan.hosts)} containers: first deploy {first_s:.1f} s "
           f"({first['changed']} changes), second deploy {second_s:.1f} s (no change); "
           f"checks: {passed.strip().splitlines()[-1]}")


def test_every_host_rebooted_comes_back_deployed(gateway_lab, reboot, report):
    """Every container rebooted from inside (nspawn's supervisor boots it again): the units
    the deploy enabled and the files it wrote bring each host back as it was; the checks
    pass and a deploy changes nothing. (A container's network namespace, with its iptables
    rules and net.* sysctls, outlives the reboot: the VM smoke test reboots real kernels.)"""
    plan, ssh_env, config = gateway_lab
    back_s = reboot(plan, config, [h.name for h in plan.hosts])
    passed = checks(plan, ssh_env)
    rerun, _, _ = deploy(ssh_env)
    assert rerun["changed"] == 0 and not rerun["errors"], rerun
    report(f"reboot of {len(plan.hosts)} containers: back on SSH with every reservation in "
           f"{back_s:.1f} s; checks: {passed.strip().splitlines()[-1]}")


def started(config, host, service):
    """When `service` last entered the active state on `host` (monotonic microseconds)."""
    run = subprocess.run(["ssh", "-F", str(config), host,
                          f"systemctl show -p ActiveEnterTimestampMonotonic --value {service}"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return int(run.stdout.strip())


def on(config, host, command):
    run = subprocess.run(["ssh", "-F", str(config), host, f"sudo sh -c '{command}'"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_config_faults_and_spec_changes_on_a_running_lab(gateway_lab, tmp_path):
    """On the deployed lab: a new config its checker refuses (dnsmasq, checked with the rest
    of its conf-dir) stops the run and leaves the old config running; a spec change then
    restarts exactly the service whose config changed; a service older than its config (a
    run stopped between the two) is restarted by the next run; a file changed by hand is put
    back."""
    plan, env, config = gateway_lab
    gw = plan.gateway.name
    live = "/etc/dnsmasq.d/kubelab.conf"
    before = on(config, gw, f"sha256sum {live}")
    since = {s: started(config, gw, s) for s in ("dnsmasq", "netfilter-persistent")}

    # The spec changes a DHCP range while a stray file makes the whole set invalid.
    net = plan.networks[1]
    changed = tmp_path / "changed.yaml"
    changed.write_text(f"extends: {env['KUBELAB_SPEC']}\nnetworks:\n  {net.name}:\n"
                       f"    dhcp: {net.dhcp.first}-{net.dhcp.last - 1}\n")
    env = {**env, "KUBELAB_SPEC": str(changed)}
    on(config, gw, "echo dhcp-range=nonsense > /etc/dnsmasq.d/zz-stray.conf")
    run = subprocess.run([*provision.pyinfra_command(), "-y", "inventory.py", "deploy.py"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert f"kubelab: {live}: the new config was refused by its checker (dnsmasq" in output
    assert "zz-stray.conf" in output or "nonsense" in output, output[-3000:]
    assert on(config, gw, f"sha256sum {live}") == before
    assert started(config, gw, "dnsmasq") == since["dnsmasq"]
    on(config, gw, "systemctl is-active dnsmasq")

    # Without the stray file the change goes through: dnsmasq restarts, the firewall not.
    on(config, gw, "rm /etc/dnsmasq.d/zz-stray.conf")
    result, _, _ = deploy(env)
    assert result["changed"] and not result["errors"]
    assert f"dhcp-range=set:{net.name},{net.dhcp.first},{net.dhcp.last - 1}," in \
        on(config, gw, f"cat {live}")
    assert started(config, gw, "dnsmasq") > since["dnsmasq"]
    assert started(config, gw, "netfilter-persistent") == since["netfilter-persistent"]
    checks(plan, env)

    # A config newer than its service, as a stopped run leaves it: the next run restarts it.
    on(config, gw, "touch /etc/iptables/rules.v4")
    result, _, _ = deploy(env)
    assert started(config, gw, "netfilter-persistent") > since["netfilter-persistent"]
    again, _, _ = deploy(env)
    assert again["changed"] == 0 and not again["errors"], again

    # A file changed by hand is put back by the next run, and nothing else changes (a
    # no-change run asks every file's state at once: tasks/helpers.py found_fact).
    client = next(h for h in plan.hosts if h.group != "gateway").name
    on(config, client, "echo nameserver 127.0.0.9 >> /etc/resolv.conf")
    result, _, _ = deploy(env)
    assert result["changed"] == 1 and not result["errors"], result
    assert "127.0.0.9" not in on(config, client, "cat /etc/resolv.conf")
