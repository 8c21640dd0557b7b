"""This machine: the facts the providers' preflights read (KVM, daemons, memory), and
installing what kubelab needs (setup).

setup() installs the Debian packages for the libvirt VMs, the container lab and the image
build, and starts virtlogd and libvirtd where no systemd does. It is idempotent.
"""
import grp
import os
import re
import socket
import subprocess
import time
from pathlib import Path

from kubelab.errors import LabError
from kubelab.system import PACKAGES, run

# Everything a fresh Debian 12 machine needs for `kubelab image build`, the libvirt and
# container labs: the packages of the tools they run, and what those tools need beside
# them (VirtualBox itself is not in Debian 12's main archive).
HOST_PACKAGES = sorted({*PACKAGES.values(), "vagrant-libvirt", "dnsmasq-base", "iptables"})
INOTIFY_INSTANCES = 1024
RUN = Path("/run/kubelab")
# virtlogd first: libvirtd hands every VM's console log to it.
DAEMONS = [("virtlogd", "/run/libvirt/virtlogd-sock"), ("libvirtd", "/run/libvirt/libvirt-sock")]


def kvm_usable():
    """KVM needs VT-x/AMD-V in the CPU and a /dev/kvm that opens. A /dev/kvm without them
    (e.g. a kvm_pvm backend) cannot boot a stock Debian kernel: QEMU must emulate (TCG)."""
    flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    if not flags or not {"vmx", "svm"} & set(flags.group(1).split()):
        return False
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return False
    return True


def loaded(*modules):
    """The named kernel modules that are loaded (some kernels have no /proc/modules)."""
    return sorted(m for m in modules if Path("/sys/module", m).is_dir())


def socket_answers(path):
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def available_mib():
    meminfo = Path("/proc/meminfo").read_text()
    return int(re.search(r"^MemAvailable:\s+(\d+)", meminfo, re.M).group(1)) // 1024


def setup():
    """Install HOST_PACKAGES (only what is missing), set what udev and systemd would, and
    make sure the libvirt daemons run. A second run changes nothing."""
    if os.geteuid() != 0:
        raise LabError("host setup installs packages and starts daemons: run it as root")
    missing = [p for p in HOST_PACKAGES if not _installed(p)]
    if missing:
        print(f"installing {' '.join(missing)}", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
            if subprocess.run(cmd, env=env).returncode != 0:
                raise LabError(f"`{' '.join(cmd)}` failed (see its output above); fix apt, "
                               "then run `kubelab host setup` again")
    _raise_inotify_limit()
    _fix_kvm_device()
    started = {} if _systemd_runs() else start_daemons()
    for daemon, pid in started.items():
        print(f"started {daemon} (pid {pid})", flush=True)
    print("host ready for kubelab (libvirt, nspawn, image build)", flush=True)


def _raise_inotify_limit():
    """Every container's systemd and every libvirt network's dnsmasq take inotify instances
    of root; the kernel's default of 128 runs out with a lab of containers and VMs (dnsmasq
    then fails "failed to create inotify: Too many open files")."""
    path = Path("/proc/sys/fs/inotify/max_user_instances")
    if int(path.read_text()) < INOTIFY_INSTANCES:
        path.write_text(f"{INOTIFY_INSTANCES}\n")


def kvm_device_wrong():
    """Without udev, /dev/kvm may keep a group other than kvm. libvirt then probes QEMU as
    root (KVM present) but re-checks as its qemu user (KVM absent), finds its capability
    cache stale every time and re-probes forever: `vagrant up` hangs before starting a VM."""
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return False
    try:
        gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        return False
    st = kvm.stat()
    return st.st_gid != gid or st.st_mode & 0o660 != 0o660


def _fix_kvm_device():
    """What udev's rule would do: /dev/kvm root:kvm 0660."""
    if kvm_device_wrong():
        os.chown("/dev/kvm", 0, grp.getgrnam("kvm").gr_gid)
        os.chmod("/dev/kvm", 0o660)


def _installed(package):
    status = run("dpkg-query", "-W", "-f=${db:Status-Status}", package, check=False).stdout
    return status.strip() == "installed"


def _systemd_runs():
    """systemd starts libvirtd itself (Debian's packages enable it)."""
    return Path("/run/systemd/system").is_dir()


def start_daemons(timeout=30):
    """Start virtlogd then libvirtd by hand, each only if its socket does not answer.
    Returns {daemon: pid} of those it started."""
    RUN.mkdir(parents=True, exist_ok=True)
    started = {}
    for daemon, sock in DAEMONS:
        if socket_answers(sock):
            continue
        pidfile = RUN / f"{daemon}.pid"
        subprocess.run([daemon, "-d", "-p", str(pidfile)], check=True)
        deadline = time.monotonic() + timeout
        while not socket_answers(sock):
            if time.monotonic() > deadline:
                raise LabError(f"{daemon} did not open {sock} within {timeout} s; "
                                   f"run `{daemon} -v` by hand to see why")
            time.sleep(0.2)
        started[daemon] = int(pidfile.read_text())
    return started
