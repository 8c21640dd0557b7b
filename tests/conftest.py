"""Shared fixtures. `container_lab` brings up examples/small.yaml's whole fleet as
systemd-nspawn containers once per test session and always tears it down."""
import os

import pytest
import yaml

from kubelab import nspawn, paths
from kubelab.plan import load_plan

SMALL_SPEC = paths.REPO / "examples" / "small.yaml"


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
    """Bring a lab up; returns (plan, ssh config). The caller must call nspawn.destroy."""
    plan = load_plan(spec)
    try:
        return plan, nspawn.up(plan, hosts)
    except BaseException:
        nspawn.destroy(plan)
        raise


@pytest.fixture(scope="session")
def container_lab(lab_state):
    """(plan, ssh config path) of examples/small.yaml's lab, every host a container;
    KUBELAB_SPEC points at that spec for the session, so `inventory.py` sees the same plan.
    Destroyed at the end of the session, also when tests fail: destroy() raises if
    anything is left behind, which shows as an error of the last test using the lab."""
    plan, config = start_lab(SMALL_SPEC)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("KUBELAB_SPEC", str(SMALL_SPEC))
            yield plan, config
    finally:
        nspawn.destroy(plan)


def derived_spec(tmp_path, suffix, base=SMALL_SPEC):
    """A spec that is `base` under another lab name (its own namespace, bridges and MACs),
    so a test can run a lab of its own beside the session's."""
    name = load_plan(base).name + suffix
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"extends": str(base), "name": name}))
    return path


@pytest.fixture
def ssh_env(container_lab):
    """Environment for subprocesses that read the lab through the repo's inventory.py."""
    plan, config = container_lab
    return {**os.environ, "KUBELAB_SPEC": str(SMALL_SPEC), "KUBELAB_SSH_CONFIG": str(config)}
