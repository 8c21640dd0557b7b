"""Container lab: every host of the plan as a systemd-nspawn container booting systemd.

Everything lives in one network namespace of the lab's own (`kubelab-<lab>`): a management
bridge holding plan.management_host_ip (where SSH comes from) and one bridge per spec network
with no address (only the gateway host routes between them). That namespace has no default
route, no forwarding and no interface outside itself, so nothing on the lab's networks can
reach or be reached from beyond this machine.

Each container has its own network namespace whose NICs are made before it boots: eth0 on the
management bridge with the plan's address, eth1.. on the spec networks in plan order with the
plan's MACs (the deploy configures those). Its root is an overlayfs over the image's rootfs.
Containers have no extra data disk (the plan's data_disk is for VMs): Gluster bricks are
plain directories.
"""
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from kubelab import image, paths
from kubelab.errors import LabError
from kubelab.paths import lab_dir, provider_file, ssh_config, ssh_control_problems, ssh_sharing
from kubelab.progress import phase
from kubelab.render import render
from kubelab.system import close_ssh_masters, missing_tools, run

TOOLS = ["systemd-nspawn", "ip", "nc", "ssh", "ssh-keygen"]
SSH_TIMEOUT = 120       # seconds for every sshd to answer after the containers start
STOP_TIMEOUT = 20       # seconds for a clean poweroff before SIGKILL
MGMT_BRIDGE = "br0-mgmt"
PROPAGATE = Path("/run/systemd/nspawn/propagate")
NETNS_DIR = Path("/run/netns")
# Names of namespaces, cgroups and machines are per machine, state dirs are not: one file per
# lab name says which state dir owns it, so two runs with one spec never touch each other.
OWNERS = Path("/run/kubelab/labs")
# nspawn keeps /proc/sys read-only unless it made the network namespace itself: the gateway
# must set its own forwarding sysctls, so /proc/sys/net stays writable.
NSPAWN_ENV = {"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
# A reboot inside a container ends systemd-nspawn with exit code 133. Its supervisor, a shell
# loop (what RestartForceExitStatus=133 does in systemd-nspawn@.service), boots it again, as a
# VM reboots; a poweroff (exit 0) or a kill ends the loop. The host's network namespace, and
# so its iptables rules and net.* sysctls, outlives such a reboot, unlike a VM's kernel.
REBOOT_EXIT = 133
SUPERVISOR = f'while "$@"; [ $? -eq {REBOOT_EXIT} ]; do :; done'


class NspawnError(LabError):
    pass


# --- names (interface names: 15 characters at most) ------------------------------------------

def lab_netns(plan):
    return f"kubelab-{plan.name}"


def host_netns(plan, host):
    return f"kubelab-{plan.name}-{host.name}"


def machine(plan, host):
    """The nspawn machine name: unique on this machine, also across labs."""
    return f"{plan.name}-{host.name}"


def bridge(network):
    return f"br{network.index + 1}-{network.name}"[:15]


def host_end(host, nic):
    """The lab-namespace end of a container NIC's veth pair."""
    return f"v{host.index}-{nic.device}"


def _owner_file(plan):
    return OWNERS / plan.name


def owner(plan):
    """The state dir of the run that owns this lab name on this machine (None: nobody)."""
    path = _owner_file(plan)
    return path.read_text().strip() if path.exists() else None


def _mine(plan):
    return owner(plan) in (None, str(lab_dir(plan)))


def owned_labs():
    """{lab name: the state dir that owns it} of every container lab on this machine."""
    return ({path.name: Path(path.read_text().strip()) for path in OWNERS.iterdir()}
            if OWNERS.is_dir() else {})


def stale_labs():
    """{lab name: state dir} of the container labs whose state dir no longer exists: no
    kubelab run can destroy them from there (`kubelab destroy` of the same lab name can)."""
    return {name: state for name, state in owned_labs().items() if not state.exists()}


def key_path(plan):
    return lab_dir(plan) / "id_ed25519"


def _hosts_dir(plan):
    return lab_dir(plan) / "hosts"


def _root(plan, host):
    return _hosts_dir(plan) / host.name / "root"


def _log(plan, host):
    path = lab_dir(plan) / "logs"
    path.mkdir(exist_ok=True)
    return path / f"{host.name}.log"


# --- small helpers ----------------------------------------------------------------------------

def _ip(netns, *args):
    return run("ip", "-n", netns, *args)


def netns_exists(name):
    return (NETNS_DIR / name).exists()


def _alive(pid):
    """True while pid runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _command_lines():
    """(pid, argv) of every process on this machine."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        yield int(entry.name), argv


def _lab_processes(plan):
    """{pid: (host name, program)} of this lab's nspawn processes and their supervisors,
    found by the --directory argument on their command lines."""
    hosts = str(_hosts_dir(plan)) + "/"
    found = {}
    for pid, argv in _command_lines():
        for arg in argv:
            if arg.startswith("--directory=" + hosts) and _alive(pid):
                name = arg.removeprefix("--directory=" + hosts).split("/")[0]
                found[pid] = (name, Path(argv[0]).name)
    return found


def container_pids(plan):
    """{pid: host name} of this lab's running nspawn processes."""
    return {pid: name for pid, (name, program) in _lab_processes(plan).items()
            if program == "systemd-nspawn"}


def _supervisor_pids(plan):
    return [pid for pid, (_, program) in _lab_processes(plan).items() if program == "sh"]


def _foreign_states(plan):
    """State dirs of other runs' containers of this lab name (from their command lines)."""
    machines = {f"--machine={machine(plan, h)}" for h in plan.hosts}
    marker = f"/{plan.name}/hosts/"
    states = set()
    for _, argv in _command_lines():
        if machines & set(argv):
            for arg in argv:
                if arg.startswith("--directory=") and marker in arg:
                    states.add(arg.removeprefix("--directory=").split(marker)[0])
    return sorted(states)


def descendants(pid):
    """pid and every process below it (a container's processes)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


# --- preflight --------------------------------------------------------------------------------

def preflight(plan):
    """Problems that stop `up` before it touches anything (empty list: go)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("the container lab needs root (network namespaces, mounts, nspawn): "
                        "run as root")
    problems += missing_tools(TOOLS) + ssh_control_problems(plan)
    if not Path("/dev/fuse").exists():
        problems.append("/dev/fuse is missing (Gluster's FUSE mounts need it): modprobe fuse")
    if "overlay" not in Path("/proc/filesystems").read_text():
        problems.append("overlayfs is not available: modprobe overlay")
    if problems:
        return problems         # what follows needs the tools
    running = [name for name, state in status(plan) if state.startswith("running")]
    if plan.name in stale_labs():
        problems.append(f"lab {plan.name} was left by a run whose state dir {owner(plan)} is "
                        "gone: `kubelab destroy --provider nspawn` removes it")
    elif not _mine(plan):
        problems.append(f"lab {plan.name} belongs to another run (state dir {owner(plan)}): "
                        "destroy it from there, or use another lab name")
    elif running or netns_exists(lab_netns(plan)):
        what = ", ".join(running) or f"namespace {lab_netns(plan)}"
        problems.append(f"lab {plan.name} is already up ({what}): `kubelab destroy` it first")
    elif owner(plan) is None and _global_leftovers(plan):
        states = _foreign_states(plan)
        fix = (f"destroy it with KUBELAB_STATE={' or '.join(states)}" if states
               else "remove them by hand")
        problems.append(f"lab {plan.name} has leftovers no kubelab run owns "
                        f"({', '.join(_global_leftovers(plan))}): {fix}")
    return problems


# --- up ---------------------------------------------------------------------------------------

def _lab_key(plan):
    path = key_path(plan)
    if not path.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kubelab-{plan.name}",
             "-f", str(path))
    path.chmod(0o600)
    return path


def _make_lab_network(plan):
    ns = lab_netns(plan)
    run("ip", "netns", "add", ns)
    # Set what we mean: a new namespace may inherit forwarding; no IPv6 link-local addresses
    # on the internal bridges either.
    run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0",
         "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
    _ip(ns, "link", "set", "lo", "up")
    _ip(ns, "link", "add", MGMT_BRIDGE, "type", "bridge")
    _ip(ns, "addr", "add", f"{plan.management_host_ip}/{plan.management.prefixlen}",
        "dev", MGMT_BRIDGE)
    _ip(ns, "link", "set", MGMT_BRIDGE, "up")
    for net in plan.networks:
        _ip(ns, "link", "add", bridge(net), "type", "bridge")
        _ip(ns, "link", "set", bridge(net), "up")


def _make_host_network(plan, host):
    """The container's own namespace with eth0.. named and addressed as the plan says."""
    ns, lab = host_netns(plan, host), lab_netns(plan)
    run("ip", "netns", "add", ns)
    bridges = {"mgmt": MGMT_BRIDGE, **{n.name: bridge(n) for n in plan.networks}}
    for nic in [host.mgmt, *host.nics]:
        end = host_end(host, nic)
        _ip(lab, "link", "add", end, "type", "veth", "peer", "name", nic.device,
            "address", nic.mac, "netns", ns)
        _ip(lab, "link", "set", end, "master", bridges[nic.network], "up")


def _vagrant_ids(root):
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "vagrant":
            return int(fields[2]), int(fields[3])
    raise NspawnError(f"no vagrant user in {root}: rebuild the image (kubelab image build)")


def _make_root(plan, host, lower, public_key):
    base = _hosts_dir(plan) / host.name
    upper, work, root = base / "upper", base / "work", base / "root"
    for d in (upper, work, root):
        d.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={upper},workdir={work}", str(root))
    # Written through the overlay so copied-up directories keep their owners and modes.
    # The hostname stays the image's, as on a VM: the deploy sets it (and /etc/hosts).
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    router = plan.management_host_ip if host.group == "gateway" else None
    (root / "etc/network/interfaces").write_text(render("nspawn/interfaces.j2", nic=host.mgmt,
                                                        router=router))
    keys = root / "home/vagrant/.ssh/authorized_keys"
    keys.write_text(public_key)     # replaces Vagrant's insecure key, as `vagrant up` does
    uid, gid = _vagrant_ids(root)
    os.chown(keys, uid, gid)
    keys.chmod(0o600)


def _cgroup_roots():
    """This machine's cgroup hierarchies that systemd uses: the named v1 'systemd' one and
    the v2 one (hybrid layout), or the v2 root alone (unified layout)."""
    roots = [Path(line.split()[4]) for line in Path("/proc/self/mountinfo").read_text()
             .splitlines() if " - cgroup2 " in line or ("name=systemd" in line
                                                         and " - cgroup " in line)]
    return [r for r in roots if r.is_dir()]


def _cgroups(plan, host=None):
    """The lab's own cgroups (a host's, or the lab's parent of them)."""
    tail = Path("kubelab", plan.name, host.name if host else "")
    return [root / tail for root in _cgroup_roots()]


def _enter_cgroups(paths):
    pid = str(os.getpid())
    for path in paths:
        (path / "cgroup.procs").write_text(pid)


def _remove_cgroups(plan):
    for top in _cgroups(plan):
        if not top.exists():
            continue
        for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass        # still has processes: reported by leftovers()
        try:
            top.parent.rmdir()     # the "kubelab" parent, once no lab uses it
        except OSError:
            pass


def _start(plan, host):
    """Start nspawn in the background, under its supervisor, in cgroups of the host's own:
    containers that shared one would remove each other's units' cgroups (status=219/CGROUP
    failures). Returns the supervisor's pid: it lives as long as the host runs."""
    cgroups = _cgroups(plan, host)
    for path in cgroups:
        path.mkdir(parents=True, exist_ok=True)
    log = open(_log(plan, host), "w")
    cmd = ["sh", "-c", SUPERVISOR, f"kubelab-{machine(plan, host)}",
           "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
           f"--machine={machine(plan, host)}", f"--directory={_root(plan, host)}",
           f"--network-namespace-path={NETNS_DIR / host_netns(plan, host)}",
           "--capability=CAP_NET_ADMIN", "--resolv-conf=off", "--timezone=off",
           "--link-journal=no", "--console=passive", "--bind=/dev/fuse"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, **NSPAWN_ENV},
                            preexec_fn=lambda: _enter_cgroups(cgroups))
    log.close()
    return proc.pid


def write_ssh_config(plan, hosts):
    path = ssh_config(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render("nspawn/ssh_config.j2", lab=plan.name, netns=lab_netns(plan),
                           hosts=hosts, key=key_path(plan),
                           sharing=ssh_sharing(plan, [h.name for h in hosts])))
    return path


def _ssh_answers(config, host):
    """One login with the lab key, without a shared connection (none is left running)."""
    try:
        return subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes",
                               "-o", "ConnectTimeout=5", "-o", "ControlMaster=no",
                               "-o", "ControlPath=none", host, "true"],
                              capture_output=True, timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _tail(path, lines=15):
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def _wait_for_ssh(plan, hosts, pids, config):
    """Until every host's sshd accepts the lab key (checked through the lab namespace)."""
    pending = {h.name: h for h in hosts}
    deadline = time.monotonic() + SSH_TIMEOUT
    while pending:
        for name, host in list(pending.items()):
            if not _alive(pids[name]):
                raise NspawnError(f"container {name} stopped while booting; its log "
                                  f"{_log(plan, host)} ends:\n{_tail(_log(plan, host))}")
            port = run("ip", "netns", "exec", lab_netns(plan), "nc", "-z", "-w", "1",
                        str(host.mgmt.address), "22", check=False)
            if port.returncode == 0 and _ssh_answers(config, name):
                del pending[name]
        if pending and time.monotonic() > deadline:
            first = next(iter(pending.values()))
            raise NspawnError(f"sshd never answered within {SSH_TIMEOUT} s on "
                              f"{', '.join(pending)}; logs in {lab_dir(plan) / 'logs'}, "
                              f"{first.name}'s ends:\n{_tail(_log(plan, first))}")
        if pending:
            time.sleep(0.5)


def up(plan, hosts=None):
    """Bring the plan's hosts (or the named subset) up as containers; returns the ssh config."""
    selected = plan.select(hosts)
    problems = preflight(plan)
    if problems:
        raise NspawnError("not starting the container lab:\n"
                          + "\n".join(f"- {p}" for p in problems))
    lower = image.rootfs()
    if leftovers(plan):     # a crashed earlier run of ours: clear what it left first
        destroy(plan)
    OWNERS.mkdir(parents=True, exist_ok=True)
    _owner_file(plan).write_text(f"{lab_dir(plan)}\n")
    provider_file(plan).write_text("nspawn\n")
    try:
        public_key = _lab_key(plan).with_suffix(".pub").read_text()
        with phase(f"lab namespace {lab_netns(plan)} with {len(plan.networks) + 1} bridges"):
            _make_lab_network(plan)
        pids = {}
        with phase(f"starting {len(selected)} containers"):
            for host in selected:
                _make_host_network(plan, host)
                _make_root(plan, host, lower, public_key)
                pids[host.name] = _start(plan, host)
        config = write_ssh_config(plan, selected)
        with phase("waiting for sshd on every container"):
            _wait_for_ssh(plan, selected, pids, config)
    except BaseException as err:
        try:
            destroy(plan)
        except Exception as cleanup:    # keep the first error; say what cleanup left
            raise cleanup from err
        raise
    return config


# --- status, destroy, leftovers ---------------------------------------------------------------

def status(plan):
    """[(host name, state)] for every planned host."""
    running = {name: pid for pid, name in container_pids(plan).items()}
    states = []
    for host in plan.hosts:
        if host.name in running:
            states.append((host.name, f"running (pid {running[host.name]})"))
        elif (_hosts_dir(plan) / host.name).exists():
            states.append((host.name, "stopped"))
        else:
            states.append((host.name, "not created"))
    return states


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass        # it has just exited


def _cgroup_pids(plan):
    """Every process in the lab's cgroups: its supervisors, nspawns and all they started."""
    pids = set()
    for top in (c for c in _cgroups(plan) if c.exists()):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except (FileNotFoundError, OSError):
                pass        # a cgroup removed meanwhile
    return pids


def _stop_containers(plan):
    """Power every container off (SIGKILL after STOP_TIMEOUT); returns once no process of
    the lab is left in its cgroups (else leftovers() names them)."""
    for pid in _supervisor_pids(plan):
        _kill(pid, signal.SIGKILL)      # no restart, even of a container rebooting right now
    pids = container_pids(plan)
    for pid in pids:
        _kill(pid, signal.SIGTERM)      # nspawn asks the container's systemd to power off
    deadline = time.monotonic() + STOP_TIMEOUT
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            for p in descendants(pid):
                _kill(p, signal.SIGKILL)
    # What is still in the lab's cgroups is the lab's (a container process that left its
    # nspawn's tree): killed, and waited for.
    deadline = time.monotonic() + 10
    while (_cgroup_pids(plan) or any(_alive(p) for p in pids)) and \
            time.monotonic() < deadline:
        for pid in _cgroup_pids(plan):
            _kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _claimed(plan):
    """Whether the objects named after this lab on the machine are ours to remove: the owner
    file names our state dir, or (a lab made before owner files) our overlays exist."""
    return owner(plan) == str(lab_dir(plan)) or _hosts_dir(plan).exists()


def _remove_machine_objects(plan):
    for host in plan.hosts:
        shutil.rmtree(PROPAGATE / machine(plan, host), ignore_errors=True)
        if netns_exists(host_netns(plan, host)):
            run("ip", "netns", "del", host_netns(plan, host))
    _remove_cgroups(plan)
    if netns_exists(lab_netns(plan)):
        run("ip", "netns", "del", lab_netns(plan))     # its bridges and veths go with it


def destroy(plan):
    """Remove every container, mount, overlay, veth, bridge and namespace of the lab; also
    of a lab of this name left by a run whose state dir is gone."""
    stale = stale_labs().get(plan.name)
    if stale:
        with paths.state_at(stale.parent):
            _destroy(plan)
        shutil.rmtree(stale)        # made again by lab_dir() on the way
        return
    if not _mine(plan):
        raise NspawnError(f"lab {plan.name} belongs to another run (state dir {owner(plan)}): "
                          "not touching it")
    _destroy(plan)


def _destroy(plan):
    with phase(f"destroying container lab {plan.name}"):
        close_ssh_masters(plan)
        _stop_containers(plan)
        for point in sorted(image.mounts_under(_hosts_dir(plan)), key=len, reverse=True):
            if run("umount", point, check=False).returncode != 0:
                run("umount", "-l", point, check=False)
        if _claimed(plan):
            _remove_machine_objects(plan)
        if _hosts_dir(plan).exists() and not image.mounts_under(_hosts_dir(plan)):
            run("rm", "-rf", "--one-file-system", str(_hosts_dir(plan)))
        if ssh_config(plan).exists():
            ssh_config(plan).unlink()
        left = leftovers(plan)
        if left == [f"owner file {_owner_file(plan)}"]:    # all gone: release the name
            _owner_file(plan).unlink()
            left = leftovers(plan)
        if left:
            raise NspawnError("destroy left these behind:\n" + "\n".join(f"- {x}" for x in left))
        provider_file(plan).unlink(missing_ok=True)


def _root_interfaces():
    links = run("ip", "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}


def _global_leftovers(plan):
    """What exists on this machine under the lab's name (namespaces, cgroups, nspawn's
    propagation dirs, interfaces in the root namespace), whoever made it."""
    names = [lab_netns(plan)] + [host_netns(plan, h) for h in plan.hosts]
    found = [f"network namespace {n}" for n in names if netns_exists(n)]
    found += [f"cgroup {c}" for c in _cgroups(plan) if c.exists()]
    found += [f"{PROPAGATE / machine(plan, h)}" for h in plan.hosts
              if (PROPAGATE / machine(plan, h)).exists()]
    ours = {MGMT_BRIDGE, *(bridge(n) for n in plan.networks),
            *(host_end(h, nic) for h in plan.hosts for nic in [h.mgmt, *h.nics])}
    found += [f"interface {i} in the root namespace" for i in sorted(ours & _root_interfaces())]
    return found


def leftovers(plan):
    """What the lab has on this machine (empty list once destroyed)."""
    found = [f"{program} process {pid} ({name})"
             for pid, (name, program) in _lab_processes(plan).items()]
    found += _global_leftovers(plan)
    found += [f"process {pid} in the lab's cgroups" for pid in sorted(_cgroup_pids(plan))]
    found += [f"mount {p}" for p in image.mounts_under(_hosts_dir(plan))]
    found += [f"overlay directory {_hosts_dir(plan)}"] if _hosts_dir(plan).exists() else []
    found += [f"owner file {_owner_file(plan)}"] if _owner_file(plan).exists() else []
    return found


# --- power cuts (failure drills) --------------------------------------------------------------

def kill_host(plan, host):
    """Pull one container's plug: its internal NICs go dark at once, then SIGKILL its
    supervisor (no restart), its nspawn and every process inside. Nothing shuts down
    cleanly; its peers see it vanish."""
    # The NICs first, as a power cut takes a VM's at once: killing the processes takes
    # a moment, during which a half-dead host would still answer. The namespace outlives the
    # container, and addresses it held (a VIP) would answer ARP there: they go too. Its next
    # boot brings the NICs up again.
    for nic in host.nics:
        _ip(host_netns(plan, host), "link", "set", nic.device, "down")
    procs = _lab_processes(plan)
    mine = [pid for pid, (name, _) in procs.items() if name == host.name]
    for pid in sorted(mine, key=lambda p: procs[p][1] != "sh"):      # the supervisor first
        for p in descendants(pid):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in mine) and time.monotonic() < deadline:
        time.sleep(0.05)
    for nic in host.nics:
        _ip(host_netns(plan, host), "addr", "flush", "dev", nic.device)
    close_ssh_masters(plan, [host])


def start_host(plan, host):
    """Boot a container that is off again, on its kept root filesystem; returns once sshd
    answers."""
    pid = _start(plan, host)
    _wait_for_ssh(plan, [host], {host.name: pid}, ssh_config(plan))
