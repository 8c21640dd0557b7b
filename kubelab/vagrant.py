"""Vagrant: the Vagrantfile rendered from the plan, and the VM lab's life cycle.

`kubelab up` keeps each lab's Vagrant state in its own directory (STATE/<lab>/vagrant)
with a Vagrantfile rendered there, so any spec works the same way. The committed top-level
Vagrantfile is the default spec's rendering for users who run `vagrant up` themselves.
Domain and network names carry the lab's name, so the two cannot both run one lab unnoticed.
"""
import os
import subprocess
from pathlib import Path

import vagrant as python_vagrant

from kubelab.errors import LabError
from kubelab.paths import (DEFAULT_SPEC, REPO, lab_dir, lab_provider, provider_file, ssh_config,
                           ssh_control_path)
from kubelab.progress import phase
from kubelab.render import render

VM_PROVIDERS = ["virtualbox", "libvirt"]
LIBVIRT_URI = "qemu:///system"
# QEMU's translation cache per VM under software emulation (its default is 1 GiB).
TCG_CACHE_MIB = 64
TOP_LEVEL = REPO / "Vagrantfile"


class VagrantError(LabError):
    """A VM step failed; the message names what and how to go on."""


def vagrantfile(plan, hosts=None):
    """The Vagrantfile for the plan's hosts (or only those named in `hosts`)."""
    chosen = [h for h in plan.hosts if hosts is None or h.name in hosts]
    return render("vagrant/Vagrantfile.j2", plan=plan, hosts=chosen,
                  networks={n.name: n for n in plan.networks}, tcg_cache_mib=TCG_CACHE_MIB)


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


def _vagrant(plan, provider):
    # python-vagrant's env= replaces the whole environment: start from ours.
    env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DEFAULT_PROVIDER=provider,
               # VirtualBox gets the Gluster data disk through Vagrant's disks feature,
               # still behind this flag in Vagrant 2.3.
               VAGRANT_EXPERIMENTAL="disks")
    return python_vagrant.Vagrant(root=str(vagrant_dir(plan)), env=env,
                                  quiet_stdout=False, quiet_stderr=False)


def up(plan, provider, hosts=None):
    """Bring the plan's VMs up (all, or those named in `hosts`); return the ssh config path.

    Only the management NIC is configured by Vagrant: the internal NICs wait for the
    deploy (DHCP from the gateway), so bring-up never waits on them.
    """
    if provider not in VM_PROVIDERS:
        raise VagrantError(f"provider {provider!r} is not a VM provider; use one of {VM_PROVIDERS}")
    unknown = set(hosts or ()) - {h.name for h in plan.hosts}
    if unknown:
        raise VagrantError(f"no such host(s) in the plan: {', '.join(sorted(unknown))}; "
                           "`kubelab plan` lists them")
    names = [h.name for h in plan.hosts if hosts is None or h.name in hosts]
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
    blocks = [machine.ssh_config().strip()]
    blocks.append(f"Host {' '.join(names)}\n  ControlMaster auto\n"
                  f"  ControlPath {ssh_control_path(plan)}\n  ControlPersist 60s")
    tmp = path.with_name(path.name + ".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text("\n\n".join(blocks) + "\n")
    tmp.replace(path)
    return path


def close_ssh(plan):
    """Stop the shared SSH connections the ssh config's ControlPersist keeps open."""
    path = ssh_config(plan)
    if path.exists():
        for host in plan.hosts:
            subprocess.run(["ssh", "-F", str(path), "-O", "exit", host.name],
                           capture_output=True, timeout=10)


def status(plan):
    """[(host name, state)] as Vagrant reports them; every planned host, created or not."""
    provider = _recorded_provider(plan)
    write_vagrantfile(plan, vagrant_dir(plan) / "Vagrantfile")
    return [(s.name, s.state) for s in _vagrant(plan, provider).status()]


def _recorded_provider(plan):
    return lab_provider(plan) or plan.default_provider


def destroy(plan):
    """Remove every VM, volume and network of the lab, also what Vagrant lost track of."""
    provider = _recorded_provider(plan)
    close_ssh(plan)
    # The full Vagrantfile: a superset of any `up` of some hosts only.
    write_vagrantfile(plan, vagrant_dir(plan) / "Vagrantfile")
    with phase(f"Destroying the VMs of {plan.name} ({provider})"):
        try:
            _vagrant(plan, provider).destroy()
        except subprocess.CalledProcessError as err:
            raise VagrantError(f"`vagrant destroy` failed (exit {err.returncode}); see its "
                               "output above, fix that and run `kubelab destroy` again") from None
        if provider == "libvirt":
            left = libvirt_leftovers(plan)
            for kind, name in left:
                _virsh(*REMOVE[kind], name)
            if libvirt_leftovers(plan):
                raise VagrantError(f"could not remove {libvirt_leftovers(plan)}; "
                                   "remove them with virsh")
            from kubelab.box import remove_unused_volumes
            remove_unused_volumes(plan.boxes["libvirt"])
    ssh_config(plan).unlink(missing_ok=True)
    provider_file(plan).unlink(missing_ok=True)


# virsh commands that remove a leftover of each kind (a domain may still run).
REMOVE = {"domain": ("undefine", "--remove-all-storage", "--nvram"),
          "running": ("destroy",), "network": ("net-destroy",),
          "network-defined": ("net-undefine",), "volume": ("vol-delete", "--pool", "default")}


def _virsh(*args):
    return subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, *args],
                          capture_output=True, text=True).stdout.split()


def libvirt_leftovers(plan):
    """[(kind, name)] of the lab's libvirt objects, in the order they must be removed."""
    domains = {f"{plan.name}-{h.name}" for h in plan.hosts}
    networks = {f"{plan.name}-mgmt"} | {f"{plan.name}-{n.name}" for n in plan.networks}
    found = [("running", d) for d in _virsh("list", "--name") if d in domains]
    found += [("domain", d) for d in _virsh("list", "--all", "--name") if d in domains]
    found += [("network", n) for n in _virsh("net-list", "--name") if n in networks]
    found += [("network-defined", n) for n in _virsh("net-list", "--all", "--name")
              if n in networks]
    volumes = _virsh("vol-list", "default")[::2]
    found += [("volume", v) for v in volumes if any(v.startswith(d + ".") or v.startswith(d + "-")
                                                    for d in domains)]
    return found


# --- power cuts (failure drills) --------------------------------------------------------------

def _require_libvirt(plan):
    if _recorded_provider(plan) != "libvirt":
        raise VagrantError("failure drills cut the power of libvirt VMs and containers; this "
                           f"lab runs on {_recorded_provider(plan)}: power its VMs off by hand")


def kill_host(plan, host):
    """Pull one VM's plug (`virsh destroy`: no shutdown, its peers see it vanish)."""
    _require_libvirt(plan)
    subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "destroy", f"{plan.name}-{host.name}"],
                   capture_output=True, check=True)
    subprocess.run(["ssh", "-F", str(ssh_config(plan)), "-O", "exit", host.name],
                   capture_output=True, timeout=10)


def start_host(plan, host):
    """Power a VM that is off on again (the caller waits for its sshd)."""
    _require_libvirt(plan)
    subprocess.run(["virsh", "-q", "-c", LIBVIRT_URI, "start", f"{plan.name}-{host.name}"],
                   capture_output=True, check=True)
