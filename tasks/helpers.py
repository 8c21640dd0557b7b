"""What every stage shares: the stage runner, and the operations stages are made of (write a
rendered file, install a config only after its service's checker accepts it, restart or
reload on change, kernel settings, wait for an address, run once on a chosen host).

A stage is a module of tasks/ with:
    NAME       how the deploy's output names it
    GROUPS     the host groups it applies to
    PACKAGES   its Debian packages (the image pre-installs them, services off)
    SYSCTLS    optional {key: value}, written to its own drop-in and applied
    MODULES    optional kernel modules, written to its own drop-in and loaded
    files_for(plan, me, secrets)  {destination: text} of every file it writes on host `me`
    deploy(plan, me, secrets)  optional: install -> configure -> activate, with those files
"""
import hashlib
import re
import weakref
from shlex import quote
from dataclasses import dataclass
from io import BytesIO

from pyinfra import host
from pyinfra.api import OperationError, deploy, operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import Command, Sysctl
from pyinfra.facts.systemd import SYSTEMD_UNIT_NAME_REGEX
from pyinfra.operations import apt, files, server, systemd

from kubelab.facts import (Container, Facts, FileState, Links, ServiceState, Sha256File,
                           UnitState)
from kubelab.render import render

# Where candidate configs wait for their checker before they replace the live ones.
CANDIDATES = "/var/lib/kubelab"


def stage_name(stage):
    """The stage's short name (its module's): names its drop-ins and templates folder."""
    return stage.__name__.rpartition(".")[2]


def applies(stage, me):
    return me.group in stage.GROUPS


def render_files(table, **context):
    """{destination: text} of a stage's {destination: template} table."""
    return {dest: render(template, **context) for dest, template in table.items()}


def sysctl_path(stage):
    return f"/etc/sysctl.d/60-kubelab-{stage_name(stage)}.conf"


def modules_path(stage):
    return f"/etc/modules-load.d/kubelab-{stage_name(stage)}.conf"


def kernel_files(stage):
    """The stage's kernel settings as its own drop-in files (none when it has none)."""
    header = f"# kubelab: kernel settings of the {stage_name(stage)} stage. Generated; do not edit.\n"
    out = {}
    if getattr(stage, "SYSCTLS", None):
        out[sysctl_path(stage)] = header + "".join(
            f"{key} = {value}\n" for key, value in stage.SYSCTLS.items())
    if getattr(stage, "MODULES", None):
        out[modules_path(stage)] = header + "".join(f"{m}\n" for m in stage.MODULES)
    return out


def stage_files(stage, plan, me, secrets):
    """Every file `stage` writes on host `me`: what the deploy uploads and `kubelab render`
    shows."""
    return {**kernel_files(stage), **stage.files_for(plan, me, secrets)}


# --- running the stages -------------------------------------------------------------------

def run_stages(stages, plan, me, secrets):
    """Run `stages` in order on host `me`. After each stage every host registers the same
    (empty) operation: pyinfra orders operations only along each host's own sequence, so
    this shared step is what keeps a stage from starting on any host before the previous
    stage has finished on all of them (no host asks for DHCP before the gateway serves)."""
    for stage in host.loop(stages):
        if applies(stage, me):
            deploy(stage.NAME)(_run_stage)(stage, plan, me, secrets)
        stage_finished(name=f"{stage.NAME} | finished on every host", stage=stage.NAME)


def _run_stage(stage, plan, me, secrets):
    if stage.PACKAGES:
        packages(f"{stage.NAME} packages", stage.PACKAGES)
    kernel_settings(stage)
    if hasattr(stage, "deploy"):
        stage.deploy(plan, me, secrets)


@operation()
def stage_finished(stage):
    """Nothing to do on the host: a point every host's sequence passes (see run_stages)."""
    yield from ()


# --- files and services -------------------------------------------------------------------

# Per host, what a run learns once: whether it is a container, its installed packages.
_CONTAINER = {}
_INSTALLED = {}


def in_container():
    """Whether the host shares the lab machine's kernel (see kubelab.facts.Container): then
    its clock, kernel modules and non-namespaced sysctls are the lab machine's to set, not its
    own. Every container/VM difference in the deploy is decided from this fact, asked once
    per host and run (it cannot change during one)."""
    if host.name not in _CONTAINER:
        _CONTAINER[host.name] = host.get_fact(Container) is not None
    return _CONTAINER[host.name]


def packages(name, wanted):
    """apt.packages for `wanted`, run only when one of them is missing from the installed
    packages, asked once per host and run: every stage's packages are checked in one round
    trip, not one per stage. A run only ever adds packages, so a list older than an install
    can only send apt.packages to check for itself."""
    def missing():
        if host.name not in _INSTALLED:
            _INSTALLED[host.name] = found_fact(DebPackages)
        return not all(p in _INSTALLED[host.name] for p in wanted)
    will_ask(DebPackages)
    apt.packages(name=name, packages=wanted, _if=missing)


@dataclass(frozen=True)
class Change:
    """A config the deploy writes: the operation writing it, and its path on the host."""
    op: object
    path: str

    def did_change(self):
        return self.op.did_change()


def put(dest, content, mode="0644", name=None):
    """Upload a rendered file (text, or bytes such as a key), owned by root, when its content
    or mode differs; the Change tells whether it changed."""
    data = content if isinstance(content, bytes) else content.encode()
    will_ask(FileState, path=dest)
    return Change(file_written(name=name or f"Write {dest}", data=data, dest=dest,
                               mode=mode), dest)


@operation()
def file_written(data, dest, mode):
    """pyinfra's files.put for a root-owned file, its state asked in one round trip (with the
    host's other planned facts, while the run has changed nothing there)."""
    found = found_fact(FileState, path=dest)
    mode = f"{int(mode, 8):o}"
    if found is None or found["sha256"] != hashlib.sha256(data).hexdigest():
        yield f"mkdir -p {quote(dest.rpartition('/')[0] or '/')}"
        yield FileUploadCommand(BytesIO(data), dest)
        yield f"chmod {mode} {quote(dest)}"
        yield f"chown root:root {quote(dest)}"
        return
    if found["mode"] != mode:
        yield f"chmod {mode} {quote(dest)}"
    if (found["user"], found["group"]) != ("root", "root"):
        yield f"chown root:root {quote(dest)}"
    if (found["mode"], found["user"], found["group"]) == (mode, "root", "root"):
        host.noop(f"{dest} is as rendered")


# --- what a run finds on a host, asked once while the run has changed nothing there ----------
# A no-change run (the usual re-run) finds each host as it was when the run began, so what
# it asked once still holds for the later operations; after the first change on the host,
# each operation asks again. Only for a host's own state, which no other host changes.
# The facts the host's operations will ask (said with will_ask when they are registered:
# the state of every file they put, among others) are asked together, at the first of them.

_FOUND = weakref.WeakKeyDictionary()        # pyinfra State -> {host name: {key: answer}}
_PLANNED = weakref.WeakKeyDictionary()      # pyinfra State -> {host name: {key: (fact, args)}}


def _of_host(table):
    return table.setdefault(host.state, {}).setdefault(host.name, {})


def _key(fact, kwargs):
    return fact.__name__, repr(sorted(kwargs.items()))


def will_ask(fact, **kwargs):
    """Said when an operation is registered: it will ask found_fact(fact, **kwargs)."""
    _of_host(_PLANNED)[_key(fact, kwargs)] = (fact, kwargs)


def untouched():
    """No operation of this run has changed this host yet."""
    return not any(data.operation_meta.is_complete() and data.operation_meta.did_change()
                   for data in host.state.ops[host].values())


def found_fact(fact, **kwargs):
    """host.get_fact(fact, **kwargs): while the run has changed nothing here, asked once,
    with every other fact planned for the host that is not known yet."""
    if not untouched():
        return host.get_fact(fact, **kwargs)
    answers, key = _of_host(_FOUND), _key(fact, kwargs)
    if key not in answers:
        asked = {k: each for k, each in _of_host(_PLANNED).items() if k not in answers}
        asked[key] = (fact, kwargs)
        together = host.get_fact(Facts, asked=list(asked.values()))
        answers.update((k, answer) for k, answer in zip(asked, together)
                       if answer is not Facts.FAILED)
    if key not in answers:      # its command failed: pyinfra's own error
        answers[key] = host.get_fact(fact, **kwargs)
    return answers[key]


def install_checked(dest, text, check, mode="0644", checker=None):
    """Upload a config beside its destination, run the service's own checker on it (`check`,
    with {candidate} where the file goes, else at its end), and only when that passes copy
    it over `dest` (`checker` names the check in messages). A refused config never reaches the service: the run stops naming the
    file and the checker's message, and the old config stays."""
    candidate = f"{CANDIDATES}/{dest.strip('/').replace('/', '_')}"
    command = check.format(candidate=candidate) if "{candidate}" in check \
        else f"{check} {candidate}"
    checker = checker or check.split()[0]
    files.directory(name=f"Directory {CANDIDATES}", path=CANDIDATES, mode="0700")
    put(candidate, text, mode=mode, name=f"Write candidate {candidate}")
    refused = (f"echo 'kubelab: {dest}: the new config was refused by its checker "
               f"({checker}, message above); the old config stays in place' >&2")
    return Change(server.shell(
        name=f"Check ({checker}) and install {dest}",
        commands=[f"if {command}; then install -m {mode} {candidate} {dest}; "
                  f"else {refused}; exit 1; fi"],
        _if=lambda: host.get_fact(Sha256File, path=candidate)
        != host.get_fact(Sha256File, path=dest)), dest)


def restart_if_changed(service, *changes, reload=False):
    """Restart (or reload) a running service when one of its configs changed in this run, or
    is newer than the service (an earlier run stopped between the two: nothing stays
    silently stale); then make sure it runs and starts at boot (a stopped one simply starts
    with the new config)."""
    verb = "Reload" if reload else "Restart"
    asked = {"service": service, "unit": unit_name(service), "paths": [c.path for c in changes],
             "stamp": f"{CANDIDATES}/reloaded-{service}"}
    will_ask(ServiceState, **asked)
    states = {}

    def state():
        # Whether it is stale, runs, starts at boot: asked once per host.
        if host.name not in states:
            states[host.name] = found_fact(ServiceState, **asked)
        return states[host.name]

    def needed():
        return any(c.did_change() for c in changes) or state()[0]

    systemd.service(name=f"{verb} {service} (config changed)", service=service,
                    running=None, restarted=not reload, reloaded=reload, _if=needed)
    if reload:      # a reload leaves the service's start time: remember when it happened
        server.shell(name=f"Note the reload of {service}",
                     commands=[f"mkdir -p {CANDIDATES} && touch {asked['stamp']}"], _if=needed)
    # With no restart, nothing touched the service since its state was asked.
    unit_state(name=f"Run {service} now and at boot", service=service, running=True,
               enabled=True, known=lambda: None if needed() else state()[1:])


def unit_name(service):
    """The systemd unit of `service` (a name without a unit suffix is a .service)."""
    return service if re.fullmatch(SYSTEMD_UNIT_NAME_REGEX, service) else f"{service}.service"


def unit_state(name, service, running=None, enabled=None, known=None):
    """pyinfra's systemd.service (start/stop, enable/disable; None leaves it), its state
    asked in one round trip (found_fact), or none when known() gives it (running, enabled)."""
    will_ask(UnitState, unit=unit_name(service))
    return unit_set(name=name, service=service, running=running, enabled=enabled, known=known)


@operation()
def unit_set(service, running, enabled, known):
    unit = unit_name(service)
    is_running, is_enabled = (known and known()) or found_fact(UnitState, unit=unit)
    if running is not None and running != is_running:
        yield f"systemctl {'start' if running else 'stop'} {unit}"
    if enabled is not None and enabled != is_enabled:
        yield f"systemctl {'enable' if enabled else 'disable'} {unit}"
    if (running in (None, is_running)) and (enabled in (None, is_enabled)):
        host.noop(f"{unit}: running {is_running}, enabled {is_enabled}")


def kernel_settings(stage):
    """Persist the stage's sysctls and modules for boot, and apply them now where the host
    owns them: inside a container only namespaced sysctls exist (net.bridge.* only if the
    lab machine loaded br_netfilter), and modules are the lab machine's."""
    for dest, text in kernel_files(stage).items():
        put(dest, text)
    if not in_container():
        for module in getattr(stage, "MODULES", []):
            server.modprobe(name=f"Load kernel module {module}", module=module)
    if getattr(stage, "SYSCTLS", {}):
        will_ask(Sysctl, keys=list(stage.SYSCTLS))
    for key, value in getattr(stage, "SYSCTLS", {}).items():
        sysctl_set(name=f"sysctl {key}", key=key, value=value, only_if_present=in_container(),
                   keys=list(stage.SYSCTLS))


@operation()
def sysctl_set(key, value, only_if_present, keys):
    """pyinfra's server.sysctl for one key of a single value; with `only_if_present`, a key
    the host does not have (a container's kernel namespace) is left out. The stage's `keys`
    are asked together (found_fact)."""
    found = found_fact(Sysctl, keys=keys).get(key)
    if found is None and only_if_present:
        host.noop(f"no {key} in this container")
    elif str(found) != str(value):
        yield f"sysctl {key}={value}"
    else:
        host.noop(f"sysctl {key} is {value}")


def nic_files(plan, me, template):
    """{path: text} of the networkd files of `me`'s internal NICs, each matched by MAC."""
    return {f"/etc/systemd/network/20-kubelab-{nic.network}.network":
            render(template, plan=plan, me=me, nic=nic) for nic in me.nics}


def internal_nics(me, files_by_path, timeout):
    """Put the internal NICs' networkd files in place, restart networkd when one changed,
    and wait (at most `timeout` s each) until every NIC holds its planned address."""
    changes = [put(path, text) for path, text in files_by_path.items()]
    restart_if_changed("systemd-networkd", *changes)
    # Boot must never wait for a gateway that may be down (Debian enables it with networkd).
    unit_state(name="Boot does not wait for the internal NICs",
               service="systemd-networkd-wait-online", enabled=False)
    will_ask(Links)
    for nic in me.nics:
        address_up(name=f"{nic.network}: address {nic.address}", mac=nic.mac,
                   address=str(nic.address), timeout=timeout)


def retry_for(seconds, command, failure, show=None, every=1):
    """Shell: `command` until it succeeds, for at most `seconds` of wall time (a slow try
    counts: not a number of tries), then `show` (a command whose output helps) and the
    `failure` message on stderr, and exit 1."""
    said = f"{show}; " if show else ""
    return (f"end=$(($(date +%s) + {seconds})); until {command}; do [ $(date +%s) -lt $end ] "
            f"|| {{ {said}echo {quote(failure)} >&2; exit 1; }}; sleep {every}; done")


@operation()
def address_up(mac, address, timeout):
    """Wait, at most `timeout` seconds, until the NIC with `mac` holds `address` (a DHCP
    reservation, or the gateway's static leg): never an unbounded wait for a gateway."""
    link = found_fact(Links).get(mac)
    if link is None:
        raise OperationError(f"no NIC with MAC {mac}: the provider did not create the NIC "
                             "the plan gives this host (re-create the host)")
    if any(a.split("/")[0] == address for a in link["ipv4"]):
        host.noop(f"{link['name']} ({mac}) holds {address}")
        return
    yield retry_for(timeout, f"ip -o -4 addr show dev {link['name']} | grep -q ' inet {address}/'",
                    f"{link['name']} ({mac}) got no address {address} in {timeout} s: is the "
                    "gateway up and its dnsmasq serving this network?")


# --- run once on a chosen host, with data for the others ----------------------------------

def chosen(plan, group):
    """The host of `group` that runs the group's once-only steps (cluster bootstrap, peer
    probe, configuration load): its first host, the same on every run."""
    return plan.group(group)[0]


# Values chosen hosts publish during a run, for the other hosts' later operations.
SHARED = {}


@operation()
def publish(key, command, chosen_host):
    """Registered on every host of the stage. On `chosen_host` (a planned Host), run
    `command` (which must change nothing) and keep its output under `key`; the other hosts
    pass this same operation after it, so their later operations can read `shared(key)`."""
    if host.data.fqdn == chosen_host.fqdn:
        SHARED[key] = host.get_fact(Command, command=command)
    yield from ()


def shared(key):
    """What the chosen host published under `key` (read when an operation runs)."""
    if key not in SHARED:
        raise OperationError(f"no host published {key!r}: its chosen host did not run")
    return SHARED[key]
