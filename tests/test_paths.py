"""The lab's state dir and SSH sockets: this user's alone, and short enough for a socket."""
import os
import tempfile
from pathlib import Path

import pytest

from kubelab import paths
from kubelab.errors import LabError
from kubelab.paths import DEFAULT_SPEC, lab_dir, ssh_control_path, ssh_control_problems
from kubelab.paths import ssh_control_socket, ssh_sharing
from kubelab.plan import load_plan


@pytest.fixture
def plan():
    return load_plan(DEFAULT_SPEC)


def test_a_state_dir_made_by_hand_with_mkdir_is_tightened_to_0700(tmp_path, monkeypatch, plan):
    monkeypatch.setattr(paths, "STATE", tmp_path / "state")
    loose = tmp_path / "state" / plan.name
    loose.mkdir(parents=True, mode=0o755)
    os.chmod(loose, 0o755)      # what `mkdir -p` makes under umask 022
    assert lab_dir(plan) == loose
    assert loose.stat().st_mode & 0o777 == 0o700


def test_a_state_dir_of_another_user_is_refused(tmp_path, monkeypatch, plan):
    monkeypatch.setattr(paths, "STATE", tmp_path)
    (tmp_path / plan.name).mkdir()
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    with pytest.raises(LabError, match="not to this user"):
        lab_dir(plan)


@pytest.fixture
def short_dir():
    """A state dir short enough for the lab's sockets (pytest's tmp_path under xdist is not)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as path:
        yield Path(path)


def test_ssh_sockets_live_in_the_labs_own_private_dir(short_dir, monkeypatch, plan):
    tmp_path = short_dir
    monkeypatch.setattr(paths, "STATE", tmp_path)
    control = ssh_control_path(plan)
    assert control == f"{tmp_path / plan.name / 'ssh'}/%n"
    assert (tmp_path / plan.name / "ssh").stat().st_mode & 0o777 == 0o700
    assert f"ControlPath {control}\n" in ssh_sharing(plan, ["gateway"])
    assert ssh_control_socket(plan, plan.gateway) == tmp_path / plan.name / "ssh" / "gateway"
    assert ssh_control_problems(plan) == []


def test_a_socket_path_too_long_for_unix_sockets_is_a_problem_with_the_fix(
        tmp_path, monkeypatch, plan):
    deep = tmp_path / ("d" * 60)
    monkeypatch.setattr(paths, "STATE", deep)
    longest = max((h.name for h in plan.hosts), key=len)
    assert len(f"{deep}/{plan.name}/ssh/{longest}") > paths.SOCKET_PATH_MAX
    [problem] = ssh_control_problems(plan)
    assert f"{deep}/{plan.name}/ssh/{longest}" in problem and "KUBELAB_STATE=" in problem
