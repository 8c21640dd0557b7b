"""The Kubernetes stages' command plan per host on pyinfra's @fake connector (no host, no
cluster): for a fresh lab and for one already initialised. kubeadm init only on the first
master, control-plane joins (with the certificate key) one at a time, then the workers
(without), the add-ons applied once from the first master; a second run repeats nothing,
a lost worker joins again, expired join data is made again."""
import hashlib

import pytest

from kubelab import paths
from kubelab.paths import DEFAULT_SPEC, REPO
from kubelab.plan import load_plan
from kubelab.secrets import lab_secrets
from tasks import addons, host_files, kubernetes
from tests.test_deploy_commands import commands, fake_deploy, fresh_host

SMALL = REPO / "examples" / "small.yaml"
INIT = "kubeadm init --config /etc/kubernetes/kubelab/init.yaml --upload-certs"
JOIN = "kubeadm join --config /etc/kubernetes/kubelab/join.yaml"
APPLY = "kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f /etc/kubernetes/kubelab/addons/"
CA_HASH = "ab" * 32
# What only the Kubernetes stages run: none of it may come back on a second run.
KUBERNETES_COMMANDS = ("kubeadm init", "kubeadm join", "kubeadm token create",
                       "kubectl --kubeconfig /etc/kubernetes/admin.conf apply",
                       "apt-get update", "apt-mark hold", "python3 -c 'import ssl", "swapoff",
                       "note: joins")
INSTALLS = (" install containerd.io", " install curl")


def kubernetes_step(command):
    return command.startswith(KUBERNETES_COMMANDS) or any(i in command for i in INSTALLS)


def vm(host):
    """A fresh Debian VM, which the first master's CA hash answers once it exists."""
    return {**fresh_host(host, "none"), "VERSION_CODENAME": "bookworm",
            "openssl x509 -pubkey": CA_HASH}


def present(path):
    """Answers saying a file exists (pyinfra's stat, for files.download)."""
    return {path: f"user=root group=root mode=-rw-r--r-- atime=0 mtime=0 ctime=0 size=1 '{path}'"}


def written(path, text):
    """Answers saying put() left `text` at `path` (kubelab.facts.FileState)."""
    return {path: ["644 root root", f"{hashlib.sha256(text.encode()).hexdigest()}  {path}"]}


def initialised(plan, secrets, lost=(), token=True, certs=True):
    """A lab the deploy has built: packages installed and held, keys and apt sources in
    place, every node joined (but those `lost`), the cluster as the manifests say."""
    def answers(host):
        joined = host.name not in lost
        keys = {**present(kubernetes.DOCKER_KEY), **present(kubernetes.kubernetes_key(plan))}
        apt = {} if host.group not in ("masters", "workers") else {
            **written(kubernetes.DOCKER_SOURCES, kubernetes.docker_sources("bookworm")),
            **{k: v for path in (kubernetes.KUBERNETES_SOURCES, kubernetes.PREFERENCES)
               for k, v in written(path, host_files(plan, host, secrets)[path]).items()}}
        nodes = [f"{h.name}={'False' if h.name in lost else 'True'}"
                 for h in plan.group("kubernetes")]
        return {"test -e /etc/kubernetes/admin.conf": "yes",
                "get nodes -o jsonpath": nodes,
                "test -e /etc/kubernetes/kubelet.conf": "yes" if joined else "",
                "kubeadm token list": secrets["kubeadm_token"] if token else "",
                "get secret kubeadm-certs": "secret/kubeadm-certs" if certs else "",
                " diff -f ": "0",
                "dpkg -l": [f"ii  {p} 1.0-1 amd64 x"
                            for p in kubernetes.PINNED + kubernetes.FETCH_PACKAGES],
                "apt-mark showhold": kubernetes.PINNED, **keys, **apt, **vm(host)}
    return answers


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The default lab (three masters, two workers) with secrets in a state dir of its own."""
    state = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "STATE", state)
        mp.setenv("KUBELAB_STATE", str(state))
        plan = load_plan(DEFAULT_SPEC)
        yield plan, lab_secrets(plan)


def run(tmp_path_factory, name, spec, answers):
    return fake_deploy(tmp_path_factory.mktemp(name), spec, answers)[0]


@pytest.fixture(scope="module")
def fresh(lab, tmp_path_factory):
    return run(tmp_path_factory, "fresh", DEFAULT_SPEC, vm)


def position(events, host, command):
    return next(i for i, (_, h, c) in enumerate(events) if h == host and c.startswith(command))


def test_init_only_on_the_first_master(lab, fresh):
    plan, _ = lab
    first, *others = plan.group("masters")
    assert commands(fresh, first.name).count(INIT) == 1
    assert JOIN not in commands(fresh, first.name)
    for host in plan.hosts:
        if host != first:
            assert INIT not in commands(fresh, host.name), host.name


def test_masters_join_as_control_planes_one_at_a_time_then_the_workers(lab, fresh):
    plan, _ = lab
    first, *others = plan.group("masters")
    init = position(fresh, first.name, INIT)
    joins = {h.name: position(fresh, h.name, JOIN) for h in others + plan.group("workers")}
    assert all(i > init for i in joins.values())
    assert max(joins[m.name] for m in others) < min(joins[w.name] for w in plan.group("workers"))
    for host in others:
        assert f"note: joins api.kube.local:6443 as a control plane, with the certificate " \
               f"key; the CA's hash sha256:{CA_HASH}" in commands(fresh, host.name)
    for host in plan.group("workers"):
        assert f"note: joins api.kube.local:6443 as a worker; the CA's hash " \
               f"sha256:{CA_HASH}" in commands(fresh, host.name)
    # _serial: the second master starts its join only once the first one's has finished.
    ops = [op for op, h, c in fresh if c == JOIN and h in {m.name for m in others}]
    assert len(ops) == 2 and ops[0] == ops[1]


def test_add_ons_are_applied_once_from_the_first_master_after_every_join(lab, fresh):
    plan, _ = lab
    first = plan.group("masters")[0]
    applies = [(i, h, c) for i, (_, h, c) in enumerate(fresh) if c.startswith(APPLY)
               or "apply -f /etc/kubernetes/kubelab/addons/" in c]
    assert {h for _, h, _ in applies} == {first.name}
    files = [path.rpartition("/")[2] for path in addons.manifests(plan)]
    assert [next(f for f in files if f in c) for _, _, c in applies] == files
    last_join = max(i for i, (_, _, c) in enumerate(fresh) if c == JOIN)
    assert applies[0][0] > last_join
    wait = position(fresh, first.name, "kubectl --kubeconfig /etc/kubernetes/admin.conf -n "
                    "metallb-system wait --for=condition=Available deployment/controller")
    pool = next(i for i, _, c in applies if "21-metallb-pool.yaml" in c)
    assert position(fresh, first.name, APPLY + "20-metallb.yaml") < wait < pool


def test_every_kubernetes_host_gets_runtime_and_pinned_packages(lab, fresh):
    plan, _ = lab
    for host in plan.group("kubernetes"):
        cmds = commands(fresh, host.name)
        assert any(c.endswith("install containerd.io kubelet kubeadm kubectl") for c in cmds)
        assert "apt-mark hold containerd.io kubelet kubeadm kubectl" in cmds
        check = [c for c in cmds if c.startswith("if sh -c 'containerd --config")]
        assert check and " /etc/containerd/config.toml; else " in check[0]
        assert cmds.index(check[0]) < cmds.index("systemctl start containerd.service")
        reach = [i for i, c in enumerate(cmds) if "cannot reach https://pkgs.k8s.io/core:/"
                 "stable:/v1.37/deb/Release.key" in c]
        installs = [i for i, c in enumerate(cmds) if " install curl" in c]
        assert reach and installs and reach[0] < installs[0], host.name
    for host in plan.hosts:
        if host.group not in ("masters", "workers"):
            assert not [c for c in commands(fresh, host.name)
                        if kubernetes_step(c)], host.name


def test_a_second_run_repeats_nothing(lab, tmp_path_factory):
    plan, secrets = lab
    # Even with the token and the uploaded certificates expired: no node needs them.
    events = run(tmp_path_factory, "again", DEFAULT_SPEC,
                 initialised(plan, secrets, token=False, certs=False))
    assert not [(h, c) for _, h, c in events if kubernetes_step(c)]
    first = plan.group("masters")[0].name
    assert "note: every planned node is Ready: no join data needed" in commands(events, first)


@pytest.mark.parametrize("group", ["workers", "masters"])
def test_a_lost_node_joins_again_with_fresh_join_data(lab, tmp_path_factory, group):
    """A node rebuilt (no kubelet.conf; its Node not Ready) after the token (24 h) and the
    uploaded certificates (2 h) expired: the token is made again, the certificates only for
    a master, and only that node joins."""
    plan, secrets = lab
    lost = plan.group(group)[-1].name
    events = run(tmp_path_factory, f"lost-{group}", DEFAULT_SPEC,
                 initialised(plan, secrets, lost=[lost], token=False, certs=False))
    first = plan.group("masters")[0].name
    role = "a control plane, with the certificate key" if group == "masters" else "a worker"
    upload = [(first, "kubeadm init phase upload-certs --upload-certs "
                      "--config /etc/kubernetes/kubelab/init.yaml")] if group == "masters" else []
    ran = [(h, c) for _, h, c in events if kubernetes_step(c)]
    assert ran == [
        (first, f"kubeadm token create {secrets['kubeadm_token']} --ttl 24h0m0s "
                "--kubeconfig /etc/kubernetes/admin.conf"),
        *upload,
        (lost, f"note: joins api.kube.local:6443 as {role}; the CA's hash sha256:{CA_HASH}"),
        (lost, JOIN)]


def test_on_containers_the_stage_says_it_is_skipped_and_does_nothing(tmp_path):
    plan = load_plan(SMALL)
    events, _ = fake_deploy(tmp_path, SMALL, lambda h: fresh_host(h, "systemd-nspawn"))
    for host in plan.group("kubernetes"):
        cmds = commands(events, host.name)
        skipped = [c for c in cmds if c.startswith("note: a container has no route")]
        assert len(skipped) == 1, host.name
        assert not [c for c in cmds if kubernetes_step(c)], host.name
