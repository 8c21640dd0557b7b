"""The deploy on a real container lab (examples/small.yaml, under a lab name of this module's
own, so the session's untouched lab never sees a deployed host): the deploy from nothing,
every host check, a second deploy that changes nothing, the checks again; then every host
rebooted, the checks and a deploy that changes nothing. Prints the deploy and reboot times.
Needs root; CI runs it every time."""
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
    run = subprocess.run(provision.verify_command(plan), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
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
