"""The stage contract (tasks/), lab secrets, and running once on a chosen host."""
import json
import os
import re
import stat
import subprocess
import time

import pytest

import tasks
from kubelab import paths, secrets
from kubelab.paths import DEFAULT_SPEC, REPO, TEMPLATES
from kubelab.plan import GROUPS, load_plan
from tasks.helpers import applies, stage_name
from tests.test_deploy_commands import fake_deploy, fresh_host, host_files

SMALL = REPO / "examples" / "small.yaml"


# --- the stage contract -----------------------------------------------------------------

@pytest.mark.parametrize("stage", tasks.STAGES, ids=stage_name)
def test_a_stage_says_everything_about_itself(stage):
    assert stage.NAME and set(stage.GROUPS) <= set(GROUPS)
    assert all(isinstance(p, str) for p in stage.PACKAGES)
    plan = load_plan(DEFAULT_SPEC)
    made_up = {name: make() for name, make in secrets.GENERATORS.items()}
    for me in plan.hosts:
        if applies(stage, me):
            assert all(dest.startswith("/etc/") for dest in stage.files_for(plan, me, made_up))


def test_templates_live_beside_their_stage_and_carry_no_role_branches():
    stage_dirs = {stage_name(s) for s in tasks.STAGES}
    for template in TEMPLATES.rglob("*.j2"):
        folder = template.relative_to(TEMPLATES).parts[0]
        assert folder in stage_dirs | {"vagrant", "nspawn", "diagram"}, template
        # Which hosts a file is for is the stage's GROUPS, never a test inside a template.
        assert not re.search(r"me\.group", template.read_text()), template


def test_the_image_installs_every_stage_package():
    assert set(tasks.image_packages()) == {p for s in tasks.STAGES for p in s.PACKAGES}


def test_kernel_settings_are_each_stage_own_drop_in():
    plan = load_plan(DEFAULT_SPEC)
    gateway = host_files(plan, plan.gateway)
    assert gateway["/etc/sysctl.d/60-kubelab-gateway.conf"].splitlines()[1:] == \
        ["net.ipv4.ip_forward = 1"]
    master = host_files(plan, plan.group("masters")[0])
    assert "br_netfilter" in master["/etc/modules-load.d/kubelab-kubernetes.conf"]
    assert not [d for d in host_files(plan, plan.group("storage")[0]) if "sysctl" in d]


# --- lab secrets --------------------------------------------------------------------------

@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "STATE", tmp_path / "state")
    return tmp_path / "state"


def test_secrets_are_made_once_private_and_removed(state):
    plan = load_plan(DEFAULT_SPEC)
    first = secrets.lab_secrets(plan)
    assert set(first) == set(secrets.GENERATORS)
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", first["kubeadm_token"])
    assert re.fullmatch(r"[0-9a-f]{64}", first["kubeadm_certificate_key"])
    assert len(first["haproxy_stats_password"]) >= 20
    path = secrets.secrets_file(plan)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert secrets.lab_secrets(plan) == first            # reused, not made again
    secrets.remove(plan)
    assert not path.exists()
    again = secrets.lab_secrets(plan)                     # a re-created lab: new ones
    assert all(again[k] != first[k] for k in first if k != "haproxy_stats_user")


def test_a_new_secret_is_added_beside_the_kept_ones(state, monkeypatch):
    plan = load_plan(DEFAULT_SPEC)
    kept = secrets.lab_secrets(plan)
    monkeypatch.setitem(secrets.GENERATORS, "new_one", lambda: "fresh")
    assert secrets.lab_secrets(plan) == {**kept, "new_one": "fresh"}


def test_render_writes_the_secrets_only_in_the_state_dir(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "KUBELAB_STATE": str(state)}
    run = subprocess.run(["python", "-m", "kubelab", "render"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    path = state / "kubelab" / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = [v for k, v in json.loads(path.read_text()).items() if k != "haproxy_stats_user"]
    tracked = subprocess.run(["git", "grep", "-l", "-F", *[x for v in values for x in ("-e", v)]],
                             cwd=REPO, capture_output=True, text=True)
    assert tracked.returncode == 1 and tracked.stdout == ""     # 1: found nowhere
    for template in TEMPLATES.rglob("*"):
        if template.is_file():
            assert not any(v in template.read_text() for v in values), template


# --- run once on a chosen host, with data for the others ----------------------------------

def test_the_chosen_host_publishes_and_the_others_use_it(tmp_path, monkeypatch):
    plan = load_plan(SMALL)
    first = plan.group("storage")[0]

    def answers(host):
        own = {"cat /etc/pool-id": "pool-of-" + host.name}
        return {**fresh_host(host, "none"), **own}

    monkeypatch.setattr("tests.test_deploy_commands.DEPLOY", "tests/deploys/share.py")
    events, totals = fake_deploy(tmp_path, SMALL, answers)
    used = {h: cmd for op, h, cmd in events if op == "Use the pool id"}
    assert used == {h.name: f"echo using pool-of-{first.name}" for h in plan.group("storage")}


def test_a_lab_built_until_a_stage_has_that_stage_and_those_before():
    assert tasks.stages_until(None) == tasks.STAGES
    upto = tasks.stages_until("loadbalancers")
    assert [stage_name(s) for s in upto] == ["baseline", "gateway", "network", "loadbalancers"]
    with pytest.raises(ValueError, match="no deploy stage 'kube'; the stages: baseline, "):
        tasks.stages_until("kube")


def test_checks_until_a_stage_leave_out_those_of_later_stages(tmp_path):
    """`pytest tests/hosts --until=STAGE` (`kubelab verify --until STAGE`) collects the check
    files of the stages up to STAGE; a file that also checks later stages only with them."""
    config = tmp_path / "ssh_config"
    config.write_text("".join(f"Host {h.name}\n" for h in load_plan(SMALL).hosts))

    def files(*until):
        run = subprocess.run(["python", "-m", "pytest", "tests/hosts", "--collect-only", "-q",
                              "-p", "no:cacheprovider", f"--ssh-config={config}", *until],
                             cwd=REPO, env={**os.environ, "KUBELAB_SPEC": str(SMALL)},
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        return set(re.findall(r"^tests/hosts/(test_\w+)\.py::", run.stdout, re.M))

    every = {"test_baseline", "test_gateway", "test_network", "test_loadbalancers",
             "test_storage", "test_kubernetes"}
    assert files() == every
    assert files("--until=loadbalancers") == every - {"test_storage", "test_kubernetes"}
    assert files("--until=storage") == every - {"test_storage", "test_kubernetes"}
    assert files("--until=storage_clients") == every - {"test_kubernetes"}
    assert files("--until=addons") == every


def test_a_bounded_wait_counts_seconds_not_tries(tmp_path):
    """Each try takes 2 s: the wait ends after its 3 s (two tries), not after 3 tries."""
    from tasks.helpers import retry_for
    tries = tmp_path / "tries"
    never = f"echo x >> {tries}; sleep 2; false"
    started = time.monotonic()
    run = subprocess.run(["sh", "-c", retry_for(3, never, "it's not there in 3 s",
                                                 show="echo shown >&2")],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and run.stderr == "shown\nit's not there in 3 s\n"
    assert len(tries.read_text().split()) == 2 and time.monotonic() - started < 6
    # A try that succeeds ends the wait at once, with its status.
    soon = f"echo x >> {tries}; [ $(wc -l < {tries}) -ge 4 ]"
    assert subprocess.run(["sh", "-c", retry_for(30, soon, "no")], timeout=30).returncode == 0
    assert len(tries.read_text().split()) == 4
