"""The load balancers on a real container lab: deployed, checked and deployed again
without change; the failover drill (`kubelab drill loadbalancer --json`); both load balancers
rebooted at once, after which the cluster forms again and the checks pass. The lab is
examples/small.yaml under a name of this module's own. Prints the drill's figures. Needs
root; CI runs it every time. (On VMs: tests/test_vm.py, which runs the same drill().)"""
import json
import os
import subprocess
import sys
import time

import pytest

from kubelab import nspawn, provision
from kubelab.drills import run as on_host
from kubelab.drills.loadbalancer import client_host
from kubelab.paths import REPO
from tests.conftest import derived_spec, start_lab
from tests.test_gateway_lab import checks, deploy

pytestmark = pytest.mark.lab

FORM_TIMEOUT = 180      # seconds for the cluster to place its resources after the reboot
LB_CHECKS = "tests/hosts/test_loadbalancers.py"


@pytest.fixture(scope="module")
def lb_lab(lab_state, tmp_path_factory):
    """(plan, spec, environment for the native tools, ssh config) of the module's lab."""
    spec = derived_spec(tmp_path_factory.mktemp("spec"), f"-lb{os.getpid()}")
    plan, config = start_lab(spec)
    try:
        yield (plan, spec, {**os.environ, "KUBELAB_SPEC": str(spec),
                            "KUBELAB_SSH_CONFIG": str(config)}, config)
    finally:
        nspawn.destroy(plan)


def test_deploy_checks_and_rerun_without_change(lb_lab, report):
    plan, _, env, _ = lb_lab
    first, _, first_s = deploy(env)
    assert first["changed"] and not first["errors"], first
    passed = checks(plan, env).strip().splitlines()[-1]
    second, _, second_s = deploy(env)
    assert second["changed"] == 0 and not second["errors"], second
    report(f"load balancers on {len(plan.hosts)} containers: first deploy {first_s:.1f} s, second "
           f"{second_s:.1f} s (no change); checks: {passed}")


def drill(plan, spec):
    """`kubelab drill loadbalancer --json` on a deployed lab -> its figures, once what holds
    on any lab is asserted: every figure measured, a power cut never free and answered by
    the other node, no flap and no request refused at the VIP once the old node is back; the
    stats password only on stderr; the client gone."""
    run = subprocess.run([sys.executable, "-m", "kubelab", "--spec", str(spec), "drill",
                          "loadbalancer", "--json"], cwd=REPO, capture_output=True, text=True,
                         timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(run.stdout)
    for key in ("hard_kill_outage_s", "clean_move_outage_s", "failed_after_recovery",
                "vip_failed_after_recovery", "flaps", "backend_down_detect_s"):
        assert isinstance(figures[key], (int, float)) and figures[key] >= 0, (key, figures)
    assert figures["hard_kill_outage_s"] > 0      # a power cut is never free
    balancers = {h.name for h in plan.group("loadbalancers")}
    assert figures["power_cut"] in balancers and figures["vip_after_power_cut"] in balancers
    assert figures["vip_after_power_cut"] != figures["power_cut"], figures
    assert figures["flaps"] == 0 and figures["vip_failed_after_recovery"] == 0, figures
    assert figures["corosync_token_ms"] == plan.corosync_token_ms
    assert "password" in run.stderr and "password" not in run.stdout
    assert_client_gone(plan)
    return figures


def assert_client_gone(plan):
    """The drill's client ends with the drill (it kept asking the VIP for its 15 minutes,
    loading the lab, when only its SSH session was closed)."""
    host = client_host(plan)
    asked = f"pgrep -f '[p]ython3 -u - {plan.api_vip} '"     # [p]: not the asking shell
    deadline = time.monotonic() + 10
    while on_host(plan, host, asked, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"the drill's client still runs on {host.name}"
        time.sleep(0.5)


def figures_line(figures):
    return ", ".join(f"{k} {v}" for k, v in figures.items() if k != "timeline")


def test_failover_drill(lb_lab, report):
    """The drill runs end to end. Its goals are printed, not asserted (timing on a shared
    machine); that the VIP stays put when its old node returns is configuration, asserted."""
    plan, spec, _, _ = lb_lab
    report("drill loadbalancer: " + figures_line(drill(plan, spec)))


def test_both_load_balancers_rebooted_form_the_cluster_again(lb_lab, reboot, report):
    plan, _, env, config = lb_lab
    names = [h.name for h in plan.group("loadbalancers")]
    back_s = reboot(plan, config, names)
    started = time.monotonic()
    while time.monotonic() - started < FORM_TIMEOUT:
        status = on_host(plan, plan.host(names[0]), "crm_resource --locate --resource api-vip",
                         check=False)
        if "running on:" in status.stdout:
            break
        time.sleep(2)
    else:
        pytest.fail(f"the VIP was placed nowhere within {FORM_TIMEOUT} s of the reboot")
    on_host(plan, plan.host(names[0]), f"crm_resource --wait --timeout={FORM_TIMEOUT}s",
            timeout=FORM_TIMEOUT + 10)
    formed_s = time.monotonic() - started
    command = provision.verify_command(plan)
    command[command.index("tests/hosts")] = LB_CHECKS
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    passed = run.stdout.strip().splitlines()[-1]
    report(f"both load balancers rebooted: back on SSH in {back_s:.1f} s, VIP placed "
           f"{formed_s:.1f} s later; checks: {passed}")
