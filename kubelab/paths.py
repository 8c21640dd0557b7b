"""Where kubelab keeps what it makes. Nothing here is committed (.gitignore)."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO / "kubelab.yaml"
TEMPLATES = REPO / "templates"
# Per-lab state: ssh config, lab ssh key, secrets. KUBELAB_STATE moves it (tests do).
STATE = Path(os.environ.get("KUBELAB_STATE", REPO / ".kubelab"))
# Built images outlive a checkout: CI's fresh clones on the same machine reuse them.
IMAGE_CACHE = Path(os.environ.get("KUBELAB_IMAGE_CACHE", "/var/cache/kubelab/images"))


def spec_path():
    """The spec the native commands (pyinfra, pytest) read: $KUBELAB_SPEC or kubelab.yaml."""
    return Path(os.environ.get("KUBELAB_SPEC", DEFAULT_SPEC))


def lab_dir(plan):
    path = STATE / plan.name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def provider_file(plan):
    """The provider a lab was brought up with: written when `up` starts (so a failed `up`
    can still be destroyed), removed by a complete destroy."""
    return lab_dir(plan) / "provider"


def lab_provider(plan):
    """The provider of the lab's hosts, or None when this state dir brought none up."""
    path = provider_file(plan)
    return path.read_text().strip() if path.exists() else None


def ssh_control_path(plan):
    """Where SSH keeps the lab's shared connections (ssh_config's ControlPath): short and per
    lab, as unix socket paths are limited to 108 bytes."""
    return f"/tmp/kubelab-{plan.name}-%r@%n"


def ssh_sharing(plan, names):
    """The ssh config block that shares one SSH connection per host among testinfra's and
    pyinfra's runs, kept open a minute after the last use."""
    return (f"Host {' '.join(names)}\n    ControlMaster auto\n"
            f"    ControlPath {ssh_control_path(plan)}\n    ControlPersist 60s")


def ssh_control_socket(plan, host):
    """The socket of the shared connection to one host (every lab logs in as vagrant)."""
    return Path(ssh_control_path(plan).replace("%r", "vagrant").replace("%n", host.name))


def ssh_config(plan):
    """The ssh config `kubelab up` writes and inventory.py / testinfra read."""
    return Path(os.environ.get("KUBELAB_SSH_CONFIG", STATE / plan.name / "ssh_config"))
