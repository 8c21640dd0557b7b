"""Where kubelab keeps what it makes. Nothing here is committed (.gitignore)."""
import os
from contextlib import contextmanager
from pathlib import Path

from kubelab.errors import LabError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO / "kubelab.yaml"
TEMPLATES = REPO / "templates"
# Per-lab state: ssh config, lab ssh key, secrets. KUBELAB_STATE moves it (tests do).
# Absolute: the container lab finds its processes by the paths on their command lines.
STATE = Path(os.environ.get("KUBELAB_STATE", REPO / ".kubelab")).absolute()
# Built images outlive a checkout: CI's fresh clones on the same machine reuse them.
IMAGE_CACHE = Path(os.environ.get("KUBELAB_IMAGE_CACHE", "/var/cache/kubelab/images"))


def spec_path():
    """The spec the native commands (pyinfra, pytest) read: $KUBELAB_SPEC or kubelab.yaml."""
    return Path(os.environ.get("KUBELAB_SPEC", DEFAULT_SPEC))


def lab_dir(plan):
    """The lab's state dir: this user's alone (0700), as it holds the lab's SSH key, secrets
    and SSH sockets."""
    path = STATE / plan.name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return private(path)


def private(path):
    """`path`, a directory of this user's, made 0700 if it was looser (a `mkdir` by hand);
    one of another user's is refused."""
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise LabError(f"{path} belongs to uid {info.st_uid}, not to this user: another user "
                       "could read or replace the lab's keys and sockets there; `chown` it to "
                       "this user, or use a state dir of your own (KUBELAB_STATE)")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


@contextmanager
def state_at(path):
    """Use `path` as the state dir for a while: to remove a lab left by a run whose state
    dir is elsewhere (or gone)."""
    global STATE
    saved, STATE = STATE, Path(path)
    try:
        yield
    finally:
        STATE = saved


def provider_file(plan):
    """The provider a lab was brought up with: written when `up` starts (so a failed `up`
    can still be destroyed), removed by a complete destroy."""
    return lab_dir(plan) / "provider"


def lab_provider(plan):
    """The provider of the lab's hosts, or None when this state dir brought none up."""
    path = provider_file(plan)
    return path.read_text().strip() if path.exists() else None


# A unix socket's path holds 107 bytes (108 with its NUL); ssh binds the ControlPath plus a
# 17-byte random suffix first, then renames it.
SOCKET_PATH_MAX = 107 - 17


def ssh_control_dir(plan):
    """The lab's SSH sockets: in its own 0700 state dir, where no other user can put one."""
    path = lab_dir(plan) / "ssh"
    path.mkdir(exist_ok=True, mode=0o700)
    return private(path)


def ssh_control_path(plan):
    """Where SSH keeps the lab's shared connections (ssh_config's ControlPath): one socket
    per host alias (every lab logs in as vagrant)."""
    return f"{ssh_control_dir(plan)}/%n"


def ssh_control_problems(plan):
    """The problem, with its fix, when the longest of the lab's sockets would not fit in a
    unix socket's path ([] when all fit)."""
    longest = max((h.name for h in plan.hosts), key=len)
    path = ssh_control_path(plan).replace("%n", longest)
    if len(path.encode()) <= SOCKET_PATH_MAX:
        return []
    return [f"the lab's SSH socket {path} would be {len(path.encode())} bytes, more than the "
            f"{SOCKET_PATH_MAX} a unix socket's path leaves it: use a state dir with a "
            f"shorter path (KUBELAB_STATE=/var/tmp/kubelab), or a shorter lab name"]


def ssh_sharing(plan, names):
    """The ssh config block that shares one SSH connection per host among testinfra's and
    pyinfra's runs, kept open a minute after the last use."""
    return (f"Host {' '.join(names)}\n    ControlMaster auto\n"
            f"    ControlPath {ssh_control_path(plan)}\n    ControlPersist 60s")


def ssh_control_socket(plan, host):
    """The socket of the shared connection to one host."""
    return Path(ssh_control_path(plan).replace("%n", host.name))


def ssh_config(plan):
    """The ssh config `kubelab up` writes and inventory.py / testinfra read."""
    return Path(os.environ.get("KUBELAB_SSH_CONFIG", STATE / plan.name / "ssh_config"))
