"""This machine: what a provider needs (check) and installing it (setup).

check() names every missing piece with its fix before anything starts; setup() installs
the Debian packages for the libvirt VMs, the container lab and the image build, and starts
virtlogd and libvirtd where no systemd does. Both are idempotent.
"""
import grp
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from netaddr import IPNetwork

from kubelab.errors import LabError
from kubelab.vagrant import LIBVIRT_URI, TCG_CACHE_MIB, VM_PROVIDERS

# Everything a fresh Debian 12 machine needs for `kubelab image build`, the libvirt and
# container labs (VirtualBox itself is not in Debian 12's main archive).
HOST_PACKAGES = ["vagrant", "vagrant-libvirt", "libvirt-daemon-system", "libvirt-clients",
                 "qemu-system-x86", "qemu-utils", "dnsmasq-base", "debootstrap",
                 "systemd-container", "netcat-openbsd", "openssh-client", "iptables",
                 "iproute2", "fdisk", "e2fsprogs"]
INOTIFY_INSTANCES = 1024
RUN = Path("/run/kubelab")
# virtlogd first: libvirtd hands every VM's console log to it.
DAEMONS = [("virtlogd", "/run/libvirt/virtlogd-sock"), ("libvirtd", "/run/libvirt/libvirt-sock")]
# What a VM costs the host beyond its memory: QEMU itself plus, under software emulation,
# its translation cache (capped in the Vagrantfile).
VM_OVERHEAD_MIB = {"kvm": 128, "tcg": 128 + TCG_CACHE_MIB, "virtualbox": 128}


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


def _loaded(*modules):
    """The named kernel modules that are loaded (some kernels have no /proc/modules)."""
    return sorted(m for m in modules if Path("/sys/module", m).is_dir())


def _socket_answers(path):
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def _run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1"))


def check(plan, provider):
    """Problems that stop `kubelab up --provider PROVIDER`, each with its fix; [] = ready."""
    if provider == "nspawn":
        from kubelab import nspawn
        return nspawn.preflight(plan)
    problems = []
    if not shutil.which("vagrant"):
        problems.append("vagrant is missing: run `kubelab host setup` (apt-get install vagrant)")
    if provider == "libvirt":
        problems += _libvirt_problems(plan)
    else:
        problems += _virtualbox_problems()
    problems += _memory_problems(plan, provider)
    return problems


def notes(plan, provider):
    """Facts worth knowing before `up` that are not problems."""
    if provider == "libvirt" and not kvm_usable():
        return ["KVM cannot run a guest here (no VT-x/AMD-V, or /dev/kvm does not open): the "
                "VMs run under QEMU's software emulation (TCG), about 9x slower, with the "
                "translation cache capped per VM"]
    if provider == "virtualbox":
        return ["VirtualBox: the lab uses internal networks, which VirtualBox's host-only "
                "address rule (/etc/vbox/networks.conf) does not restrict"]
    return []


def _libvirt_problems(plan):
    problems = []
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-img", "qemu-utils"),
                          ("virsh", "libvirt-clients"), ("libvirtd", "libvirt-daemon-system")):
        if not shutil.which(tool):
            problems.append(f"{tool} is missing: run `kubelab host setup` "
                            f"(apt-get install {package})")
    if shutil.which("vagrant") and "vagrant-libvirt" not in _run("vagrant", "plugin", "list").stdout:
        problems.append("the vagrant-libvirt plugin is missing: run `kubelab host setup` "
                        "(apt-get install vagrant-libvirt)")
    if _kvm_device_wrong():
        problems.append("/dev/kvm is not root:kvm 0660 (no udev set it): libvirt would re-probe "
                        "QEMU forever; run `kubelab host setup`, which sets it")
    for daemon, path in DAEMONS:
        if not _socket_answers(path):
            problems.append(f"{daemon} is not running: run `kubelab host setup`, which starts it")
    box = plan.boxes["libvirt"]
    if shutil.which("vagrant") and not re.search(rf"^{re.escape(box)}\s+\(libvirt,",
                                                 _run("vagrant", "box", "list").stdout, re.M):
        problems.append(f"the box {box} is not added to Vagrant: run `kubelab image build`")
    if kvm_usable() and _loaded("vboxdrv"):
        problems.append("VirtualBox's vboxdrv module is loaded: VirtualBox and KVM cannot run "
                        "VMs at once; stop VirtualBox's VMs and `modprobe -r vboxdrv`")
    if shutil.which("virsh"):
        problems += _network_clashes(plan)
    return problems


def _virtualbox_problems():
    problems = []
    if not shutil.which("VBoxManage"):
        problems.append("VirtualBox is missing (VBoxManage): install it from virtualbox.org "
                        "(Debian 12 has no package), or use --provider libvirt with the local box")
    kvm = _loaded("kvm_intel", "kvm_amd")
    if kvm:
        problems.append(f"KVM is active ({', '.join(kvm)}): VirtualBox and KVM cannot "
                        f"run VMs at once; stop libvirt's VMs and `modprobe -r {' '.join(kvm)}`, "
                        "or use --provider libvirt")
    return problems


def available_mib():
    meminfo = Path("/proc/meminfo").read_text()
    return int(re.search(r"^MemAvailable:\s+(\d+)", meminfo, re.M).group(1)) // 1024


def _memory_problems(plan, provider):
    accel = provider if provider == "virtualbox" else ("kvm" if kvm_usable() else "tcg")
    need = sum(h.memory + VM_OVERHEAD_MIB[accel] for h in plan.hosts)
    available = available_mib()
    if need > available:
        return [f"the spec's {len(plan.hosts)} VMs need about {need} MiB (their memory plus "
                f"{VM_OVERHEAD_MIB[accel]} MiB each for {accel}), this machine has {available} "
                "MiB available: lower hosts.*.memory or the counts (examples/small.yaml fits "
                "8 GiB), or stop other VMs"]
    return []


def _network_clashes(plan):
    """Host addresses or other libvirt networks inside the lab's networks: vagrant-libvirt
    would refuse them, and packets for the lab could go astray."""
    ours = {f"{plan.name}-mgmt"} | {f"{plan.name}-{n.name}" for n in plan.networks}
    lab = [("management.cidr", plan.management)]
    lab += [(f"networks.{n.name}.cidr", n.cidr) for n in plan.networks]
    problems = []
    bridges = set()
    for name in _run("virsh", "-c", LIBVIRT_URI, "net-list", "--all", "--name").stdout.split():
        xml = _run("virsh", "-c", LIBVIRT_URI, "net-dumpxml", name).stdout
        if name in ours:
            bridges.update(re.findall(r"<bridge name='([^']+)'", xml))
            continue
        for address, mask in re.findall(r"<ip address='([\d.]+)' netmask='([\d.]+)'", xml):
            problems += [f"libvirt network {name} uses {address}/{mask}, inside {path} "
                         f"({cidr}): remove it (virsh net-destroy {name}; virsh net-undefine "
                         f"{name}) or move {path}" for path, cidr in lab
                         if IPNetwork(f"{address}/{mask}") in cidr or
                         cidr in IPNetwork(f"{address}/{mask}")]
    for link in json.loads(_run("ip", "-j", "address").stdout or "[]"):
        if link["ifname"] in bridges:
            continue
        for addr in link.get("addr_info", []):
            if addr["family"] != "inet":
                continue
            net = IPNetwork(f"{addr['local']}/{addr['prefixlen']}")
            problems += [f"interface {link['ifname']} holds {net}, which overlaps {path} "
                         f"({cidr}): move {path} to a range this machine does not use"
                         for path, cidr in lab if net.first <= cidr.last and cidr.first <= net.last]
    return problems


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


def _kvm_device_wrong():
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
    if _kvm_device_wrong():
        os.chown("/dev/kvm", 0, grp.getgrnam("kvm").gr_gid)
        os.chmod("/dev/kvm", 0o660)


def _installed(package):
    result = _run("dpkg-query", "-W", "-f=${db:Status-Status}", package)
    return result.stdout.strip() == "installed"


def _systemd_runs():
    """systemd starts libvirtd itself (Debian's packages enable it)."""
    return Path("/run/systemd/system").is_dir()


def start_daemons(timeout=30):
    """Start virtlogd then libvirtd by hand, each only if its socket does not answer.
    Returns {daemon: pid} of those it started."""
    RUN.mkdir(parents=True, exist_ok=True)
    started = {}
    for daemon, sock in DAEMONS:
        if _socket_answers(sock):
            continue
        pidfile = RUN / f"{daemon}.pid"
        subprocess.run([daemon, "-d", "-p", str(pidfile)], check=True)
        deadline = time.monotonic() + timeout
        while not _socket_answers(sock):
            if time.monotonic() > deadline:
                raise LabError(f"{daemon} did not open {sock} within {timeout} s; "
                                   f"run `{daemon} -v` by hand to see why")
            time.sleep(0.2)
        started[daemon] = int(pidfile.read_text())
    return started
