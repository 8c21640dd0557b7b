"""The Gluster pool on a real container lab of its own (examples/small.yaml's gateway, storage hosts
and Kubernetes hosts): the deploy from nothing makes the Gluster pool, its volume and the
mounts; the storage checks pass; a second deploy changes nothing; `kubelab drill storage
--json` cuts a storage host's power under write load and loses nothing; a storage host
rebooted comes back with its bricks online and nothing left to heal; destroy, with the
mounts up, leaves nothing behind. Prints the figures. Needs root; CI runs it every time."""
import json
import os
import subprocess

import pytest

from kubelab import nspawn, provision
from kubelab.paths import REPO, lab_dir
from kubelab.plan import load_plan
from tests.conftest import derived_spec, start_lab

pytestmark = pytest.mark.lab
# Seconds a deploy here may take (~20 s) before it is stopped and says where it waited.
DEPLOY_TIMEOUT = 300
STALL_GOAL_S = 5        # the goal: writes stall at most this long when a storage host dies


@pytest.fixture(scope="module")
def storage_lab(lab_state, tmp_path_factory):
    """(plan, spec, ssh config) of small.yaml's hosts the storage stages need: the gateway
    (DNS, DHCP), the storage hosts and the Kubernetes hosts (the clients)."""
    spec = derived_spec(tmp_path_factory.mktemp("spec"), f"-st{os.getpid()}")
    plan = load_plan(spec)
    names = [plan.gateway.name, *(h.name for h in plan.group("storage")),
             *(h.name for h in plan.group("kubernetes"))]
    plan, config = start_lab(spec, names)
    try:
        yield plan, spec, config
    finally:
        nspawn.destroy(plan)


def deploy(plan, spec):
    code, output, seconds = provision.deploy(plan, spec, lab_dir(plan) / "provision.log",
                                             timeout=DEPLOY_TIMEOUT)
    result = provision.totals(output)
    assert code == 0 and result and not result["errors"], provision.failure_output(output)
    return result, output, seconds


def storage_checks(plan, spec):
    cmd = [("tests/hosts/test_storage.py" if arg == "tests/hosts" else arg)
           for arg in provision.verify_command(plan)]
    run = subprocess.run(cmd, cwd=REPO, env=provision.lab_env(spec), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert "skipped" not in summary and " passed" in summary, summary
    return summary


def test_deploy_makes_the_pool_and_the_mounts_and_a_rerun_changes_nothing(storage_lab,
                                                                           report):
    plan, spec, _ = storage_lab
    first, _, first_s = deploy(plan, spec)
    assert first["changed"], first
    passed = storage_checks(plan, spec)
    second, output, second_s = deploy(plan, spec)
    assert second["changed"] == 0, "the second deploy changed something:\n" + "\n".join(
        line for line in output.splitlines() if "Success" in line or "|" in line)
    report(f"storage stages on {len(plan.group('storage'))} storage + "
           f"{len(plan.group('kubernetes'))} Kubernetes containers: first deploy {first_s:.1f} s "
           f"({first['changed']} changes), second {second_s:.1f} s (no change); storage "
           f"checks: {passed}")


def test_drill_a_storage_host_power_cut_loses_nothing(storage_lab, report):
    plan, spec, _ = storage_lab
    run = subprocess.run(["python", "-m", "kubelab", "--spec", str(spec), "drill", "storage",
                          "--json"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(run.stdout)
    assert figures["files_written"] > 0 and figures["failed_writes"] == 0, figures
    assert (figures["lost_files"], figures["corrupt_files"],
            figures["missing_brick_copies"]) == (0, 0, 0), figures
    assert figures["spurious_disconnects"] == 0, figures
    assert figures["write_stall_s"] <= STALL_GOAL_S, figures
    report("drill storage: " + json.dumps({k: v for k, v in figures.items()
                                            if k != "timeline"}))


def test_a_rebooted_storage_host_comes_back_with_its_bricks(storage_lab, reboot, report):
    """Its bricks online again and heal info empty (the storage checks wait for both, at
    most a minute); then a deploy changes nothing."""
    plan, spec, config = storage_lab
    host = plan.group("storage")[1]
    back_s = reboot(plan, config, [host.name])
    passed = storage_checks(plan, spec)
    rerun, _, _ = deploy(plan, spec)
    assert rerun["changed"] == 0, rerun
    report(f"reboot of {host.name}: back on SSH in {back_s:.1f} s; storage checks: {passed}")


def test_destroy_leaves_nothing_behind(storage_lab):
    """Destroy with glusterd running and the FUSE mounts up: no process, namespace, bridge,
    veth, mount or overlay of the lab is left, and the root namespace is as it was."""
    plan, _, config = storage_lab
    assert nspawn.leftovers(plan), "the lab should be up before destroy"
    nspawn.destroy(plan)
    assert nspawn.leftovers(plan) == []
    assert not config.exists()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    assert nspawn.lab_netns(plan) not in netns
    with open("/proc/self/mounts") as mounts:
        assert not [line for line in mounts if str(nspawn.lab_dir(plan)) in line]
    assert all(state == "not created" for _, state in nspawn.status(plan))
