"""Vagrant: the Vagrantfile rendered from the plan, and the VM lab's life cycle under
either of Vagrant's providers (virtualbox, libvirt): what each needs of this machine
(preflight), up, status and destroy.

`kubelab up` keeps each lab's Vagrant state in its own directory (STATE/<lab>/vagrant)
with a Vagrantfile rendered there, so any spec works the same way. The committed top-level
Vagrantfile is the default spec's rendering for users who run `vagrant up` themselves.
Domain and network names carry the lab's name, so the two cannot both run one lab unnoticed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import vagrant as python_vagrant
from netaddr import IPNetwork

from kubelab import host
from kubelab.box import remove_unused_volumes
from kubelab.errors import LabError
from kubelab.inventory import ssh_config_hosts
from kubelab.paths import (DEFAULT_SPEC, REPO, lab_dir, provider_file, ssh_config,
                           ssh_control_problems, ssh_sharing)
from kubelab.progress import phase
from kubelab.render import render
from kubelab.system import VAGRANT_ENV, close_ssh_masters, missing_tools, run, virsh

VM_PROVIDERS = ["virtualbox", "libvirt"]
# QEMU's translation cache per VM under software emulation (its default is 1 GiB).
TCG_CACHE_MIB = 64
# What a VM costs the host beyond its memory: QEMU itself plus, under software emulation,
# its translation cache (capped in the Vagrantfile).
VM_OVERHEAD_MIB = {"kvm": 128, "tcg": 128 + TCG_CACHE_MIB, "virtualbox": 128}
TOP_LEVEL = REPO / "Vagrantfile"


class VagrantError(LabError):
    """A VM step failed; the message names what and how to go on."""


# --- names: VMs and networks carry the lab's name, in libvirt and in VirtualBox ----------------

def vm_prefix(plan):
    """What every VM's name starts with (vagrant-libvirt's default_prefix)."""
    return f"{plan.name}-"


def vm_name(plan, vm):
    """The name of a planned host's VM: its libvirt domain (vagrant-libvirt joins the prefix
    and the host name) and its VirtualBox name."""
    return f"{vm_prefix(plan)}{vm.name}"


def network_name(plan, network):
    """A lab network's name in libvirt and in VirtualBox: "mgmt" or a spec network's name."""
    return f"{plan.name}-{network}"


def network_names(plan):
    """{network: its name in libvirt and VirtualBox} for mgmt and every spec network."""
    return {n: network_name(plan, n) for n in ["mgmt", *(n.name for n in plan.networks)]}


def vagrantfile(plan, hosts=None):
    """The Vagrantfile for the plan's hosts (or only those named in `hosts`)."""
    chosen = [h for h in plan.hosts if hosts is None or h.name in hosts]
    return render("vagrant/Vagrantfile.j2", plan=plan, hosts=chosen,
                  networks={n.name: n for n in plan.networks}, tcg_cache_mib=TCG_CACHE_MIB,
                  prefix=vm_prefix(plan), vm_names={h.name: vm_name(plan, h) for h in chosen},
                  network_names=network_names(plan))


def write_vagrantfile(plan, path, hosts=None):
    """Write the rendering atomically: a reader never sees half a Vagrantfile."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(vagrantfile(plan, hosts))
    tmp.replace(path)
    return path


def vagrantfile_path(plan, spec):
    """Where `kubelab render` writes: the committed top-level Vagrantfile for the default
    spec, the lab's Vagrant directory for any other."""
    if Path(spec).resolve() == DEFAULT_SPEC.resolve():
        return TOP_LEVEL
    return vagrant_dir(plan) / "Vagrantfile"


def vagrant_dir(plan):
    path = lab_dir(plan) / "vagrant"
    path.mkdir(exist_ok=True)
    return path


# --- preflight ----------------------------------------------------------------------------------

def preflight(plan, provider):
    """Problems that stop `kubelab up` with this provider, each with its fix; [] = ready."""
    problems = missing_tools(["vagrant"]) + ssh_control_problems(plan)
    if provider == "libvirt":
        problems += _libvirt_problems(plan)
    else:
        problems += _virtualbox_problems()
    return problems + _memory_problems(plan, provider)


def notes(plan, provider):
    """Facts worth knowing before `up` that are not problems."""
    if provider == "libvirt" and not host.kvm_usable():
        return ["KVM cannot run a guest here (no VT-x/AMD-V, or /dev/kvm does not open): the "
                "VMs run under QEMU's software emulation (TCG), about 9x slower, with the "
                "translation cache capped per VM"]
    if provider == "virtualbox":
        return ["VirtualBox: the lab uses internal networks, which VirtualBox's host-only "
                "address rule (/etc/vbox/networks.conf) does not restrict"]
    return []


def _vagrant_says(*args):
    return run("vagrant", *args, check=False, env={**os.environ, **VAGRANT_ENV}).stdout


def _libvirt_problems(plan):
    problems = missing_tools(["qemu-system-x86_64", "qemu-img", "virsh", "libvirtd"])
    if shutil.which("vagrant") and "vagrant-libvirt" not in _vagrant_says("plugin", "list"):
        problems.append("the vagrant-libvirt plugin is missing: run `kubelab host setup` "
                        "(apt-get install vagrant-libvirt)")
    if host.kvm_device_wrong():
        problems.append("/dev/kvm is not root:kvm 0660 (no udev set it): libvirt would re-probe "
                        "QEMU forever; run `kubelab host setup`, which sets it")
    for daemon, path in host.DAEMONS:
        if not host.socket_answers(path):
            problems.append(f"{daemon} is not running: run `kubelab host setup`, which starts it")
    box = plan.boxes["libvirt"]
    if shutil.which("vagrant") and not re.search(rf"^{re.escape(box)}\s+\(libvirt,",
                                                 _vagrant_says("box", "list"), re.M):
        problems.append(f"the box {box} is not added to Vagrant: run `kubelab image build`")
    if host.kvm_usable() and host.loaded("vboxdrv"):
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
    kvm = host.loaded("kvm_intel", "kvm_amd")
    if kvm:
        problems.append(f"KVM is active ({', '.join(kvm)}): VirtualBox and KVM cannot "
                        f"run VMs at once; stop libvirt's VMs and `modprobe -r {' '.join(kvm)}`, "
                        "or use --provider libvirt")
    return problems


def _memory_problems(plan, provider):
    accel = provider if provider == "virtualbox" else ("kvm" if host.kvm_usable() else "tcg")
    need = sum(h.memory + VM_OVERHEAD_MIB[accel] for h in plan.hosts)
    available = host.available_mib()
    if need > available:
        return [f"the spec's {len(plan.hosts)} VMs need about {need} MiB (their memory plus "
                f"{VM_OVERHEAD_MIB[accel]} MiB each for {accel}), this machine has {available} "
                "MiB available: lower hosts.*.memory or the counts (examples/small.yaml fits "
                "8 GiB), or stop other VMs"]
    return []


def _network_clashes(plan):
    """Host addresses or other libvirt networks inside the lab's networks: vagrant-libvirt
    would refuse them, and packets for the lab could go astray."""
    ours = set(network_names(plan).values())
    lab = [("management.cidr", plan.management)]
    lab += [(f"networks.{n.name}.cidr", n.cidr) for n in plan.networks]
    problems = []
    bridges = set()
    for name in virsh("net-list", "--all", "--name").split():
        xml = virsh("net-dumpxml", name)
        if name in ours:
            bridges.update(re.findall(r"<bridge name='([^']+)'", xml))
            continue
        for address, mask in re.findall(r"<ip address='([\d.]+)' netmask='([\d.]+)'", xml):
            problems += [f"libvirt network {name} uses {address}/{mask}, inside {path} "
                         f"({cidr}): remove it (virsh net-destroy {name}; virsh net-undefine "
                         f"{name}) or move {path}" for path, cidr in lab
                         if IPNetwork(f"{address}/{mask}") in cidr or
                         cidr in IPNetwork(f"{address}/{mask}")]
    for link in json.loads(run("ip", "-j", "address", check=False).stdout or "[]"):
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


# --- life cycle ---------------------------------------------------------------------------------

def _vagrant(plan, provider):
    # python-vagrant's env= replaces the whole environment: start from ours.
    env = {**os.environ, **VAGRANT_ENV, "VAGRANT_DEFAULT_PROVIDER": provider,
           # VirtualBox gets the Gluster data disk through Vagrant's disks feature,
           # still behind this flag in Vagrant 2.3.
           "VAGRANT_EXPERIMENTAL": "disks"}
    return python_vagrant.Vagrant(root=str(vagrant_dir(plan)), env=env,
                                  quiet_stdout=False, quiet_stderr=False)


def up(plan, provider, hosts=None):
    """Bring the plan's VMs up (all, or those named in `hosts`); return the ssh config path.

    Only the management NIC is configured by Vagrant: the internal NICs wait for the
    deploy (DHCP from the gateway), so bring-up never waits on them.
    """
    names = [h.name for h in plan.select(hosts)]
    write_vagrantfile(plan, vagrant_dir(plan) / "Vagrantfile", hosts)
    provider_file(plan).write_text(provider + "\n")
    machine = _vagrant(plan, provider)
    with phase(f"Starting {len(names)} VM(s) with {provider}"):
        try:
            machine.up(provider=provider)
        except subprocess.CalledProcessError as err:
            raise VagrantError(f"`vagrant up` failed (exit {err.returncode}); see its output "
                               f"above. `kubelab destroy` removes what was made.") from None
    return write_ssh_config(plan, machine, names)


def write_ssh_config(plan, machine, names):
    """`vagrant ssh-config` of every VM, one Host alias per planned name, plus connection
    sharing: testinfra and pyinfra then reuse one SSH connection per host."""
    path = ssh_config(plan)
    # One `vagrant ssh-config` for every VM of the Vagrantfile: each call costs seconds.
    blocks = [machine.ssh_config().strip(), ssh_sharing(plan, names)]
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text("\n\n".join(blocks) + "\n")
    tmp.replace(path)
    return path


def status(plan, provider):
    """[(host name, state)] as Vagrant reports them; every planned host, created or not."""
    write_vagrantfile(plan, vagrant_dir(plan) / "Vagrantfile")
    return [(s.name, s.state) for s in _vagrant(plan, provider).status()]


def destroy(plan, provider):
    """Remove every VM, volume and network of the lab, also what Vagrant lost track of."""
    close_ssh_masters(plan)
    # The full Vagrantfile: a superset of any `up` of some hosts only.
    write_vagrantfile(plan, vagrant_dir(plan) / "Vagrantfile")
    with phase(f"Destroying the VMs of {plan.name} ({provider})"):
        try:
            _vagrant(plan, provider).destroy()
            failed = None
        except subprocess.CalledProcessError as err:
            failed = f"`vagrant destroy` failed (exit {err.returncode}; see its output above)"
        if provider != "libvirt":
            if failed:
                raise VagrantError(f"{failed}: fix that and run `kubelab destroy` again")
        else:   # libvirt's objects of the lab go, whatever Vagrant managed
            for kind, name in libvirt_leftovers(plan):
                virsh(*REMOVE[kind], name)
            if libvirt_leftovers(plan):
                raise VagrantError(f"{failed or '`vagrant destroy` ran'}, and could not "
                                   f"remove {libvirt_leftovers(plan)}: remove them with virsh")
            remove_unused_volumes(plan.boxes["libvirt"])
            if failed:
                print(f"warning: {failed}; the lab's domains, networks and volumes were "
                      "removed from libvirt directly", file=sys.stderr)
    ssh_config(plan).unlink(missing_ok=True)
    provider_file(plan).unlink(missing_ok=True)


# virsh commands that remove a leftover of each kind (a domain may still run).
REMOVE = {"domain": ("undefine", "--remove-all-storage", "--nvram"),
          "running": ("destroy",), "network": ("net-destroy",),
          "network-defined": ("net-undefine",), "volume": ("vol-delete", "--pool", "default")}


def libvirt_leftovers(plan):
    """[(kind, name)] of the lab's libvirt objects, in the order they must be removed."""
    domains = {vm_name(plan, h) for h in plan.hosts}
    networks = set(network_names(plan).values())
    found = [("running", d) for d in virsh("list", "--name").split() if d in domains]
    found += [("domain", d) for d in virsh("list", "--all", "--name").split() if d in domains]
    found += [("network", n) for n in virsh("net-list", "--name").split() if n in networks]
    found += [("network-defined", n) for n in virsh("net-list", "--all", "--name").split()
              if n in networks]
    volumes = virsh("vol-list", "default").split()[::2]
    found += [("volume", v) for v in volumes if any(v.startswith(d + ".") or v.startswith(d + "-")
                                                    for d in domains)]
    return found


# --- reaching VMs from this machine -----------------------------------------------------------

def management_bridge(plan):
    """The bridge of the lab's libvirt management network (None when it does not exist)."""
    for line in virsh("net-info", network_name(plan, "mgmt")).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Bridge":
            return value.strip()
    return None


def _ssh_options(config, name):
    """{option: value} ssh would use for host `name` of ssh config `config` (`ssh -G`)."""
    said = run("ssh", "-F", str(config), "-G", name, check=False).stdout
    return dict(line.split(" ", 1) for line in said.splitlines() if " " in line)


def check_routes(plan):
    """Before anything reaches the lab's VMs from this machine's own network namespace: the
    route to every address in the lab's ssh config (bar those reached through a
    ProxyCommand, the container lab's namespace) must leave on the lab's own management
    bridge, or stay on this machine (VirtualBox's forwarded ports). A stale ssh config (VMs
    removed by `vagrant destroy`) would send the packets along the default route, off the
    machine: that is an error naming the config and the fix."""
    config = ssh_config(plan)
    leaving = []        # (host, address, device) of routes that leave this machine
    for name in sorted(ssh_config_hosts(config)):
        options = _ssh_options(config, name)
        if options.get("proxycommand", "none") != "none":
            continue
        address = options.get("hostname", name)
        route = run("ip", "-j", "route", "get", address, check=False)
        device = json.loads(route.stdout)[0].get("dev") if route.returncode == 0 else None
        if device != "lo":
            leaving.append((name, address, device))
    bridge = management_bridge(plan) if leaving else None
    for name, address, device in leaving:
        if device is None or device != bridge:
            where = (f"the lab's bridge is {bridge}" if bridge else
                     f"libvirt has no network {network_name(plan, 'mgmt')}")
            raise VagrantError(
                f"the ssh config {config} sends {name} ({address}) out through "
                f"{device or 'no route'}, not the lab's management network ({where}): the ssh "
                "config is stale (the VMs were removed, e.g. by `vagrant destroy`). Bring the "
                f"lab up (`kubelab up`), or remove {config}")


# --- power cuts (failure drills) --------------------------------------------------------------

def kill_host(plan, host):
    """Pull one libvirt VM's plug (`virsh destroy`: no shutdown, its peers see it vanish)."""
    virsh("destroy", vm_name(plan, host), check=True)
    close_ssh_masters(plan, [host])


def start_host(plan, host):
    """Power a libvirt VM that is off on again (the caller waits for its sshd)."""
    virsh("start", vm_name(plan, host), check=True)
