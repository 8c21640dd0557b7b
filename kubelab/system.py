"""Commands on this machine: one way to run them, one way to ask libvirt, and the Debian
package of every tool kubelab calls (what the preflights name and `kubelab host setup`
installs)."""
import json
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from netaddr import IPAddress

from kubelab.errors import LabError
from kubelab.paths import ssh_config, ssh_control_socket

LIBVIRT_URI = "qemu:///system"
# command -> the Debian package that provides it
PACKAGES = {
    # the container lab
    "systemd-nspawn": "systemd-container", "ip": "iproute2", "nc": "netcat-openbsd",
    "ssh": "openssh-client", "ssh-keygen": "openssh-client",
    # the image and the box
    "debootstrap": "debootstrap", "unshare": "util-linux", "chroot": "coreutils",
    "sfdisk": "fdisk", "losetup": "mount", "partx": "util-linux", "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils", "tar": "tar",
    # VMs
    "vagrant": "vagrant", "qemu-system-x86_64": "qemu-system-x86", "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
}
# Vagrant asks HashiCorp's server for updates on every run unless told not to.
VAGRANT_ENV = {"VAGRANT_CHECKPOINT_DISABLE": "1"}


class CommandError(LabError):
    """A command failed; the message says which and shows what it printed."""


def missing_tools(tools):
    """A problem, with its fix, for each of `tools` that is not on the PATH."""
    return [f"'{tool}' not found: apt-get install {PACKAGES[tool]} (or `kubelab host setup`)"
            for tool in tools if not shutil.which(tool)]


def run(*cmd, check=True, log=None, **kwargs):
    """Run cmd and return its CompletedProcess (text). Its output is captured, or appended to
    the file `log` after the command line. With check, a failure raises CommandError with
    what the command printed (the log's last lines)."""
    if log is None:
        result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
        what, said = " ".join(cmd), result.stderr.strip() or result.stdout.strip()
    else:
        with open(log, "a") as out:
            out.write(f"\n$ {' '.join(cmd)}\n")
            out.flush()
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                    **kwargs)
        # The log has the whole command line (a script, for some).
        what, said = cmd[0], f"last lines of {log}:\n" + "\n".join(
            Path(log).read_text(errors="replace").splitlines()[-25:])
    if check and result.returncode != 0:
        raise CommandError(f"{what} failed (exit {result.returncode}): {said}")
    return result


@lru_cache(maxsize=1)
def own_addresses():
    """This machine's IPv4 addresses in its own network namespace, loopback's aside, sorted;
    read once per process (a deploy reads them when it starts)."""
    links = json.loads(run("ip", "-j", "-4", "addr", "show").stdout)
    return sorted({IPAddress(a["local"]) for link in links for a in link.get("addr_info", [])
                   if a.get("scope") != "host"})


def virsh(*args, check=False):
    """What `virsh` prints for args against the system libvirt (empty if it fails, unless
    `check`: then a failure raises CommandError)."""
    return run("virsh", "-q", "-c", LIBVIRT_URI, *args, check=check).stdout


def close_ssh_masters(plan, hosts=None):
    """Stop the lab's shared SSH connections (the ssh config's ControlPersist keeps them), to
    every host or to `hosts`."""
    config = ssh_config(plan)
    for host in plan.hosts if hosts is None else hosts:
        socket = ssh_control_socket(plan, host)
        if config.exists() and socket.exists():
            run("ssh", "-F", str(config), "-O", "exit", host.name, check=False, timeout=10)
        socket.unlink(missing_ok=True)
