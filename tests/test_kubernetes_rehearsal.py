"""A rehearsal of the Kubernetes stages on real hosts: containers (three masters, one worker)
reached over SSH, with stand-in kubeadm and kubectl installed by this test (tests/standins/:
they record their arguments and leave the files the real ones would). So the cross-host
order, the join data passed from the first master, the secrets' handling and idempotence run
for real; what kubeadm and kubectl themselves do does not (no cluster runs here).
Needs root; a lab of its own."""
import os
import re
import stat
import subprocess
import time

import pytest
import yaml

from kubelab import nspawn
from kubelab.paths import REPO
from kubelab.provision import pyinfra_command, totals
from kubelab.secrets import lab_secrets
from tasks.control_plane import INIT, JOIN, kubeconfig_path
from tests.conftest import SMALL_SPEC, start_lab

pytestmark = pytest.mark.lab

STANDINS = REPO / "tests" / "standins"
STATE = "/var/lib/kubelab-standin"
DEPLOY_TIMEOUT = 300     # seconds; a run takes ~10 (a loaded machine: much more)


def ssh(config, name, command, stdin=None):
    run = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", name, command],
                         input=stdin, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"{name}: {command}: {run.stderr}"
    return run.stdout


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    """(certificate, the sha256 of its public key): the stand-in cluster's CA, made here with
    openssl, and its hash computed here the way kubeadm's discovery wants it."""
    where = tmp_path_factory.mktemp("ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=kubernetes", "-keyout", str(where / "ca.key"),
                    "-out", str(where / "ca.crt")], check=True, capture_output=True)
    der = subprocess.run(f"openssl x509 -pubkey -noout -in {where / 'ca.crt'} | "
                         "openssl pkey -pubin -outform der | sha256sum", shell=True,
                         check=True, capture_output=True, text=True)
    return (where / "ca.crt").read_text(), der.stdout.split()[0]


@pytest.fixture(scope="module")
def rehearsal_lab(lab_state, tmp_path_factory, ca):
    """(plan, env, ssh config) of three masters and one worker (small.yaml with two more
    masters, under a name of its own), stand-ins installed on each."""
    spec = tmp_path_factory.mktemp("spec") / "rehearsal.yaml"
    spec.write_text(yaml.safe_dump({"extends": str(SMALL_SPEC), "name": f"kubereh{os.getpid()}",
                                    "hosts": {"masters": {"count": 3}}}))
    from kubelab.plan import load_plan
    names = [h.name for h in load_plan(spec).group("kubernetes")]
    plan, config = start_lab(spec, names)
    try:
        for name in names:
            for tool in ("kubeadm", "kubectl"):
                ssh(config, name, f"sudo install -m 0755 /dev/stdin /usr/local/bin/{tool}",
                    (STANDINS / tool).read_text())
            ssh(config, name, f"sudo mkdir -p {STATE} && sudo tee {STATE}/ca.crt >/dev/null",
                ca[0])
        env = {**os.environ, "KUBELAB_SPEC": str(spec), "KUBELAB_SSH_CONFIG": str(config)}
        yield plan, env, config
    finally:
        nspawn.destroy(plan)


def deploy(plan, env):
    limits = [arg for h in plan.group("kubernetes") for arg in ("--limit", h.name)]
    try:
        run = subprocess.run([*pyinfra_command(), "-y", *limits, "inventory.py",
                              "tests/deploys/kubernetes_rehearsal.py"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=DEPLOY_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        # Both streams (pyinfra's progress is on stderr); bytes, though text was asked.
        said = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                       for part in (err.stdout or "", err.stderr or ""))
        pytest.fail(f"the deploy took over {DEPLOY_TIMEOUT} s:\n{said[-4000:]}")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    return totals(output), output


def log(config, name):
    """[(time, command)] the stand-ins recorded on host `name`."""
    text = ssh(config, name, f"sudo cat {STATE}/log 2>/dev/null || true")
    return [(float(t), c) for t, c in (line.split(" ", 1) for line in text.splitlines())]


def ran(config, name, prefix):
    return [t for t, c in log(config, name) if c.startswith(prefix)]


def test_rehearsal_init_joins_add_ons_secrets_and_a_second_run(rehearsal_lab, ca, report):
    plan, env, config = rehearsal_lab
    secrets = lab_secrets(plan)
    first, *others = plan.group("masters")
    worker = plan.group("workers")[0]
    started = time.monotonic()
    first_run, output = deploy(plan, env)
    first_s = time.monotonic() - started

    # Order across hosts: init, then each master's join one after the other, then the worker.
    [init] = ran(config, first.name, "kubeadm init --config")
    joins = {h.name: ran(config, h.name, "kubeadm join") for h in [*others, worker]}
    assert all(len(times) == 1 for times in joins.values()), joins
    assert not ran(config, first.name, "kubeadm join")
    master_joins = sorted(joins[h.name][0] for h in others)
    assert init < master_joins[0] and master_joins[-1] < joins[worker.name][0]

    # The join data: the first master's CA hash, the lab's token; the key only for masters.
    for host in [*others, worker]:
        config_used = yaml.safe_load(ssh(config, host.name,
                                         f"sudo cat {STATE}/joined-with.yaml"))
        discovery = config_used["discovery"]["bootstrapToken"]
        assert discovery["caCertHashes"] == [f"sha256:{ca[1]}"]
        assert discovery["token"] == secrets["kubeadm_token"]
        key = config_used.get("controlPlane", {}).get("certificateKey")
        assert key == (secrets["kubeadm_certificate_key"] if host.group == "masters" else None)

    # Add-ons applied once, from the first master only, after the worker joined.
    applies = [(t, c) for t, c in log(config, first.name) if " apply -f " in c]
    assert [c.rsplit("/", 1)[1] for _, c in applies] == \
        ["10-flannel.yaml", "20-metallb.yaml", "21-metallb-pool.yaml", "30-local-path.yaml",
         "40-headlamp.yaml"]
    assert applies[0][0] > joins[worker.name][0]
    for host in [*others, worker]:
        assert not [c for _, c in log(config, host.name) if c.startswith("kubectl")]

    # Secrets: files holding them are 0600, the deploy's output never shows them.
    assert ssh(config, first.name, f"sudo stat -c %a {INIT}").strip() == "600"
    for host in [*others, worker]:
        assert ssh(config, host.name, f"sudo stat -c %a {JOIN}").strip() == "600"
    for name in ("kubeadm_token", "kubeadm_certificate_key"):
        assert secrets[name] not in output, name
    kubeconfig = kubeconfig_path(plan)
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    assert server["server"] == f"https://{plan.api_vip}:{plan.api_port}"
    assert server["tls-server-name"] == plan.api_name

    # A second run changes nothing and runs no kubeadm or kubectl that changes anything.
    before = {h.name: len(log(config, h.name)) for h in plan.group("kubernetes")}
    second_run, output = deploy(plan, env)
    assert second_run["changed"] == 0 and not second_run["errors"], second_run
    for host in plan.group("kubernetes"):
        new = [c for _, c in log(config, host.name)[before[host.name]:]]
        changing = r"kube(adm (init|join|token create)|ctl .*apply)"
        assert not [c for c in new if re.match(changing, c)]

    # The worker is lost (rebuilt: no kubelet.conf) and the token expired: it joins again.
    ssh(config, worker.name, "sudo rm /etc/kubernetes/kubelet.conf")
    ssh(config, first.name, f"sudo rm {STATE}/tokens")
    third_run, _ = deploy(plan, env)
    assert len(ran(config, worker.name, "kubeadm join")) == 2
    assert len(ran(config, first.name, f"kubeadm token create {secrets['kubeadm_token']}")) == 1
    assert len(ran(config, first.name, "kubeadm init --config")) == 1
    for host in others:
        assert len(ran(config, host.name, "kubeadm join")) == 1
    report(f"Kubernetes rehearsal on {len(plan.group('kubernetes'))} containers (stand-in "
           f"kubeadm/kubectl): first run {first_s:.1f} s ({first_run['changed']} changes), "
           f"second run no change, a lost worker joined again ({third_run['changed']} changes)")
