"""The Kubernetes hosts (masters and workers): what every node needs before kubeadm.

containerd 2.x from Docker's apt repository (containerd.io, with runc), its whole config
written for its config version; kubelet, kubeadm and kubectl of the spec's minor from
pkgs.k8s.io, pinned and held; swap off and kept off; the kernel settings of pod networking.
The packages come from the internet: a host that cannot reach a repository stops at once,
naming it. A container (the container lab) has no route out and shares the lab machine's
kernel: there the stage stops after its Debian packages and kernel settings, saying so.
"""
from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files

from kubelab.facts import Codename, SwapDevices
from kubelab.render import render
from tasks.helpers import (in_container, install_checked, put, render_files, restart_if_changed,
                           unit_state)

NAME = "Kubernetes hosts"
GROUPS = ("masters", "workers")
PACKAGES = ["glusterfs-client", "iptables", "conntrack", "socat", "ebtables"]
# What fetching from the repositories needs: only where they are reachable (not in the
# offline image, whose containers skip this stage).
FETCH_PACKAGES = ["curl", "ca-certificates", "openssl"]
# Pods' traffic crosses Linux bridges and must pass iptables (the seed's 10-kubernetes.conf).
MODULES = ["overlay", "br_netfilter"]
SYSCTLS = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1",
           "net.bridge.bridge-nf-call-ip6tables": "1"}

# The runtime, pinned here (the Kubernetes minor is the spec's; add-ons: files/addons).
CONTAINERD = "2.3"      # containerd's long-term support line (to 2028)
# The pause image kubeadm expects, per Kubernetes minor (kubeadm's constants.PauseVersion).
PAUSE = {"1.35": "3.10.1", "1.36": "3.10.1", "1.37": "3.10.1"}
SOCKET = "/run/containerd/containerd.sock"
KUBERNETES_PACKAGES = ["kubelet", "kubeadm", "kubectl"]
PINNED = ["containerd.io", *KUBERNETES_PACKAGES]

KEYRINGS = "/etc/apt/keyrings"
DOCKER_REPOSITORY = "https://download.docker.com/linux/debian"
DOCKER_KEY = f"{KEYRINGS}/docker.asc"
DOCKER_SOURCES = "/etc/apt/sources.list.d/docker.sources"
KUBERNETES_SOURCES = "/etc/apt/sources.list.d/kubernetes.sources"
PREFERENCES = "/etc/apt/preferences.d/kubelab-kubernetes"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CRICTL = "/etc/crictl.yaml"
REACH_SECONDS = 20      # a repository that does not answer by then stops the stage


def kubernetes_repository(plan):
    return f"https://pkgs.k8s.io/core:/stable:/v{plan.kubernetes_version}/deb/"


def kubernetes_key(plan):
    # One key file per minor: a new minor's repository brings its key along.
    return f"{KEYRINGS}/kubernetes-v{plan.kubernetes_version}.asc"


def containerd_config_version(containerd):
    """containerd's config version: 3 for 2.0-2.2, 4 from 2.3 on."""
    major, minor = (int(x) for x in containerd.split("."))
    return 4 if (major, minor) >= (2, 3) else 3


def containerd_config(plan, containerd=CONTAINERD):
    return render("kubernetes/containerd.toml.j2", plan=plan, containerd=containerd,
                  config_version=containerd_config_version(containerd), socket=SOCKET,
                  pause_image=f"registry.k8s.io/pause:{PAUSE[plan.kubernetes_version]}")


def files_for(plan, me, secrets):
    """Every file but Docker's apt source, whose suite is the host's own Debian release."""
    context = dict(plan=plan, socket=SOCKET, containerd=CONTAINERD,
                   kubernetes_packages=KUBERNETES_PACKAGES,
                   repository=kubernetes_repository(plan), key=kubernetes_key(plan))
    return {CONTAINERD_CONFIG: containerd_config(plan),
            **render_files({CRICTL: "kubernetes/crictl.yaml.j2",
                            KUBERNETES_SOURCES: "kubernetes/kubernetes.sources.j2",
                            PREFERENCES: "kubernetes/preferences.j2"}, **context)}


def docker_sources(codename):
    """Docker's apt source for the host's Debian release."""
    return render("kubernetes/docker.sources.j2", repository=DOCKER_REPOSITORY, key=DOCKER_KEY,
                  codename=codename)


def deploy(plan, me, secrets):
    if in_container():
        skipped(name="Kubernetes skipped on a container")
        return
    rendered = files_for(plan, me, secrets)
    keys = {DOCKER_KEY: f"{DOCKER_REPOSITORY}/gpg",
            kubernetes_key(plan): f"{kubernetes_repository(plan)}Release.key"}
    # Each repository's key: a file every one of them serves (a directory may answer 403).
    repositories_answer(name="The package repositories answer", urls=list(keys.values()))
    apt.packages(name="curl, CA certificates, openssl", packages=FETCH_PACKAGES)
    files.directory(name=f"Directory {KEYRINGS}", path=KEYRINGS, mode="0755")
    for dest, url in keys.items():
        files.download(name=f"Key {dest}", src=url, dest=dest, mode="0644")
    sources = [put(DOCKER_SOURCES, docker_sources(host.get_fact(Codename))),
               put(KUBERNETES_SOURCES, rendered[KUBERNETES_SOURCES]),
               put(PREFERENCES, rendered[PREFERENCES])]
    apt.update(name="Package lists (a repository or pin changed)",
               _if=lambda: any(op.did_change() for op in sources) or missing_packages())
    apt.packages(name="containerd, kubelet, kubeadm, kubectl", packages=PINNED)
    held(name="Hold the pinned packages", packages=PINNED)

    swap_off(name="Swap off")
    files.replace(name="Swap stays off after boot", path="/etc/fstab",
                  text=r"^[^#].*[[:space:]]swap[[:space:]]", replace="#&")

    config = install_checked(CONTAINERD_CONFIG, rendered[CONTAINERD_CONFIG],
                             "sh -c 'containerd --config \"$0\" config dump >/dev/null'")
    restart_if_changed("containerd", config)
    put(CRICTL, rendered[CRICTL])
    # kubeadm starts kubelet with the configuration it writes; it must start at boot.
    unit_state(name="kubelet starts at boot", service="kubelet", enabled=True)


def missing_packages():
    installed = host.get_fact(DebPackages)
    return [p for p in PINNED if p not in installed]


@operation()
def skipped():
    """One line in the deploy's output: why this stage does nothing on this host."""
    host.noop("a container has no route to the package repositories and shares the lab "
              "machine's kernel: no containerd, kubelet or kubeadm here (use VMs or hosts)")
    yield from ()


@operation()
def repositories_answer(urls):
    """When packages are still to install, stop at once (never an apt hang) on a host that
    cannot reach a repository, naming it."""
    if not missing_packages():
        host.noop("the pinned packages are installed")
        return
    # python3 (every host has it), before curl is installed; reachability only: apt checks
    # what it fetches against the repositories' keys.
    for url in urls:
        yield (f"python3 -c 'import ssl, sys, urllib.request; urllib.request.urlopen(sys.argv[1], "
               f"timeout={REACH_SECONDS}, context=ssl._create_unverified_context())' {url} "
               f"2>/dev/null || {{ echo 'kubelab: this host cannot reach {url} within "
               f"{REACH_SECONDS} s: the Kubernetes stages need it (a route out through the "
               "gateway, or a proxy)' >&2; exit 1; }")


@operation()
def held(packages):
    """apt-mark hold, for the packages not held yet."""
    holds = set((host.get_fact(Command, command="apt-mark showhold") or "").split())
    todo = [p for p in packages if p not in holds]
    if todo:
        yield f"apt-mark hold {' '.join(todo)}"
    else:
        host.noop("held: " + ", ".join(packages))


@operation()
def swap_off():
    if host.get_fact(SwapDevices):
        yield "swapoff -a"
    else:
        host.noop("no swap in use")
