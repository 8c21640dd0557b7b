"""Shared fixtures. `container_lab` brings up examples/small.yaml's whole fleet as
systemd-nspawn containers once per test session and always tears it down."""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from kubelab import nspawn, paths
from kubelab.plan import load_plan

SMALL_SPEC = paths.REPO / "examples" / "small.yaml"


@pytest.fixture(scope="session")
def report(request):
    """report(line): print a measured figure to the terminal as it happens, past pytest's
    output capture, so that every CI run shows them."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def write(line):
        with capture.global_and_fixture_disabled():
            print(f"\n[figure] {line}", flush=True)
    return write


# This project's test labs: small.yaml's lab name and a suffix ending in the pid of the
# pytest process that made it (derived_spec), or the Kubernetes rehearsal's.
TEST_LAB = re.compile(r"^(?:kubesmall-[a-z]*|kubereh)(\d+)$")


def remove_killed_runs_labs(tmp_path, own_state):
    """Destroy the container labs of test runs killed midway (SIGKILL, a CI time-out: no
    teardown ran): only this project's test labs (by name, and a state dir in pytest's temp
    dirs) whose pytest process is gone. Labs in `own_state` are this session's. Returns
    their names."""
    removed = []
    for name, state in nspawn.owned_labs().items():
        match = TEST_LAB.match(name)
        if not match or "/pytest-of-" not in str(state) or state.parent == own_state:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and Path(f"/proc/{pid}").exists():
            continue        # its run (or a process that took its pid) is alive: not ours
        # Every test lab's hosts and more: small.yaml with the rehearsal's three masters.
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(yaml.safe_dump({"extends": str(SMALL_SPEC), "name": name,
                                        "hosts": {"masters": {"count": 3}}}))
        with paths.state_at(state.parent):
            nspawn.destroy(load_plan(spec))
        removed.append(name)
    return removed


@pytest.fixture(scope="session")
def lab_state(tmp_path_factory, report):
    """A private state dir (ssh config, lab key, overlays) for the session's labs, also seen
    by the subprocesses tests start (pyinfra, inventory.py). Labs that killed test runs left
    are removed first."""
    state = tmp_path_factory.mktemp("kubelab-state")
    removed = remove_killed_runs_labs(tmp_path_factory.mktemp("stale"), state)
    if removed:
        report(f"removed {len(removed)} lab(s) of killed test runs: {', '.join(removed)}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "STATE", state)
        mp.setenv("KUBELAB_STATE", str(state))
        mp.delenv("KUBELAB_SSH_CONFIG", raising=False)
        yield state


def start_lab(spec, hosts=None):
    """Bring a lab up (up() clears what it made if it fails); returns (plan, ssh config).
    The caller must call nspawn.destroy."""
    plan = load_plan(spec)
    return plan, nspawn.up(plan, hosts)


@pytest.fixture(scope="session")
def container_lab(lab_state, tmp_path_factory, report):
    """(plan, ssh config path) of examples/small.yaml's fleet, every host a container, under
    a lab name of this session's own (so two test runs on one machine never meet).
    KUBELAB_SPEC points at that spec for the session, so `inventory.py` and tests/hosts see
    the same plan. Destroyed at the end of the session, also when tests fail: destroy()
    raises if anything is left behind, which shows as an error of the last test using it."""
    spec = derived_spec(tmp_path_factory.mktemp("spec"), f"-{os.getpid()}")
    started = time.monotonic()
    plan, config = start_lab(spec)
    report(f"container lab of {len(plan.hosts)} hosts up (SSH answering) in "
           f"{time.monotonic() - started:.1f} s")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KUBELAB_SPEC", str(spec))
            yield plan, config
    finally:
        started = time.monotonic()
        nspawn.destroy(plan)
        report(f"container lab of {len(plan.hosts)} hosts destroyed in "
               f"{time.monotonic() - started:.1f} s")


def derived_spec(tmp_path, suffix, base=SMALL_SPEC):
    """A spec that is `base` under the lab name + suffix (its own namespaces, bridges and
    MACs), so a test session or a test can run a lab of its own beside others."""
    name = load_plan(base).name + suffix
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"extends": str(base), "name": name}))
    return path


@pytest.fixture
def spec_named(tmp_path):
    """spec_named(suffix): small.yaml as a lab of a test's own (see derived_spec)."""
    return lambda suffix: derived_spec(tmp_path, suffix)


@pytest.fixture
def ssh_env(container_lab):
    """Environment for subprocesses that read the lab through the repo's inventory.py."""
    _, config = container_lab
    return {**os.environ, "KUBELAB_SSH_CONFIG": str(config)}


@pytest.fixture(scope="module")
def gateway_lab(lab_state, tmp_path_factory):
    """(plan, environment for the native tools: spec and ssh config, ssh config path) of a
    whole small.yaml fleet of its own, for tests that deploy on it (in file order)."""
    spec = derived_spec(tmp_path_factory.mktemp("spec"), f"-gw{os.getpid()}")
    plan, config = start_lab(spec)
    try:
        yield (plan, {**os.environ, "KUBELAB_SPEC": str(spec), "KUBELAB_SSH_CONFIG": str(config)},
               config)
    finally:
        nspawn.destroy(plan)


BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
REBOOT_TIMEOUT = 600    # seconds for a host to be back on SSH (a VM under TCG: 1-2 min)
DHCP_TIMEOUT = 120      # seconds more for a rebooted client to hold its reservation again


def _ssh(config, name, command):
    """A command over a fresh SSH connection (a shared one dies with a reboot)."""
    try:
        return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes",
                               "-o", "ConnectTimeout=5", "-o", "ControlMaster=no",
                               "-o", "ControlPath=none", name, command],
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None


def _wait_for(config, name, command, done, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _ssh(config, name, command)
        if run and run.returncode == 0 and done(run.stdout.strip()):
            return
        time.sleep(2)
    pytest.fail(f"{name}: {what} within {timeout} s of its reboot")


@pytest.fixture(scope="session")
def reboot():
    """reboot(plan, config, names): reboot hosts from inside, as a user would, and wait until
    each answers SSH from a new boot and each client holds its DHCP reservation again.
    Returns the seconds that took. The same for VMs and containers."""
    def run(plan, config, names):
        boots = {}
        for name in names:
            run = _ssh(config, name, BOOT_ID)
            assert run and run.returncode == 0, f"{name}: no boot id before the reboot: {run}"
            boots[name] = run.stdout.strip()
        started = time.monotonic()
        for name in names:
            # Two seconds later, by systemd: the reboot must not cut the session asking for it.
            # (A timer's default accuracy is a minute: systemd 257 uses that slack.)
            asked = _ssh(config, name, "sudo systemd-run --quiet --on-active=2 "
                         "--timer-property=AccuracySec=100ms systemctl reboot")
            assert asked and asked.returncode == 0, f"{name}: reboot refused: {asked}"
            subprocess.run(["ssh", "-F", str(config), "-O", "exit", name], capture_output=True)
        for name in names:
            _wait_for(config, name, BOOT_ID, lambda out, old=boots[name]: out and out != old,
                      REBOOT_TIMEOUT, "not back on SSH")
        for host in (plan.host(n) for n in names if plan.host(n).group != "gateway"):
            nic = host.nics[0]
            _wait_for(config, host.name, f"ip -o -4 addr show dev {nic.device}",
                      lambda out, nic=nic: f" inet {nic.address}/" in out, DHCP_TIMEOUT,
                      f"no DHCP reservation {nic.address}")
        return time.monotonic() - started
    return run
