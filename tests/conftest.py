"""Shared fixtures. `container_lab` brings up examples/small.yaml's whole fleet as
systemd-nspawn containers once per test session and always tears it down."""
import os
import time

import pytest
import yaml

from kubelab import nspawn, paths
from kubelab.plan import load_plan

SMALL_SPEC = paths.REPO / "examples" / "small.yaml"


@pytest.fixture(scope="session")
def report(request):
    """report(line): print a measured figure to the terminal as it happens, past pytest's
    output capture (the issues ask for these figures from every CI run)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def write(line):
        with capture.global_and_fixture_disabled():
            print(f"\n[figure] {line}", flush=True)
    return write


@pytest.fixture(scope="session")
def lab_state(tmp_path_factory):
    """A private state dir (ssh config, lab key, overlays) for the session's labs, also seen
    by the subprocesses tests start (pyinfra, inventory.py)."""
    state = tmp_path_factory.mktemp("kubelab-state")
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
def gluster_lab(lab_state, tmp_path_factory):
    """The storage hosts and one worker of a second lab beside the session's (small.yaml under
    another name: its own namespace), for tests that change hosts or destroy the lab."""
    spec = derived_spec(tmp_path_factory.mktemp("spec"), f"-gl{os.getpid()}")
    plan = load_plan(spec)
    names = [h.name for h in plan.group("storage")] + [plan.group("workers")[0].name]
    plan, config = start_lab(spec, names)
    try:
        yield plan, config
    finally:
        nspawn.destroy(plan)


@pytest.fixture(scope="module")
def gateway_lab(lab_state, tmp_path_factory):
    """(plan, environment for the native tools: spec and ssh config) of a whole small.yaml
    fleet of its own, for a test that deploys on it."""
    spec = derived_spec(tmp_path_factory.mktemp("spec"), f"-gw{os.getpid()}")
    plan, config = start_lab(spec)
    try:
        yield plan, {**os.environ, "KUBELAB_SPEC": str(spec), "KUBELAB_SSH_CONFIG": str(config)}
    finally:
        nspawn.destroy(plan)
