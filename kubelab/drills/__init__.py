"""Failure drills: `kubelab drill NAME [--json]` breaks one part of a running lab on purpose,
measures what a user of the lab would see, and prints a timeline and the figures.

Each drill is a module of this package with `run(plan, timeline) -> {figure: value}`; what
they share is here: commands on lab hosts over the lab's ssh config, a host's power cut and
power on (through its provider), and the timeline.
"""
import importlib
import json
import pkgutil
import subprocess
import sys
import time

from kubelab import providers
from kubelab.errors import LabError
from kubelab.inventory import reachable
from kubelab.paths import lab_provider, ssh_config
from kubelab.vagrant import check_routes

SSH_TIMEOUT = 300       # seconds for a host powered on again to answer over SSH


class DrillError(LabError):
    """The drill could not run (lab not up, a step failed); the message says which."""


def names():
    """The drills there are (this package's modules)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__))


class Timeline:
    """Events in seconds since the drill started, printed as they happen (unless quiet)."""

    def __init__(self, quiet=False):
        self.start = time.monotonic()
        self.events = []
        self.quiet = quiet

    def now(self):
        return time.monotonic() - self.start

    def mark(self, text, at=None):
        at = self.now() if at is None else at
        self.events.append((round(at, 2), text))
        if not self.quiet:
            print(f"  {at:7.2f} s  {text}", flush=True)


def up(plan, group):
    """The hosts of `group` the lab has up (in its ssh config; existing machines): a lab may
    run only some of its planned hosts (`kubelab up --hosts`)."""
    names = reachable(plan)
    return [h for h in plan.group(group) if h.name in names]


def ssh_command(plan, host, command, shared=True):
    """The ssh argv for `command` on a lab host; shared=False opens a connection of its own
    (a shared one dies with the host it leads to)."""
    own = [] if shared else ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    return ["ssh", "-F", str(ssh_config(plan)), "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5", *own, host.name, command]


def run(plan, host, command, timeout=60, check=True):
    """Run `command` on a lab host (as root, through sudo); returns the CompletedProcess."""
    try:
        done = subprocess.run(ssh_command(plan, host, f"sudo sh -c {_quote(command)}"),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DrillError(f"{host.name}: `{command}` did not finish in {timeout} s") from None
    if check and done.returncode != 0:
        raise DrillError(f"{host.name}: `{command}` failed (exit {done.returncode}): "
                         f"{done.stderr.strip()[-500:]}")
    return done


def _quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def wait_until(check, what, timeout):
    """check()'s first true value, asked every half second; DrillError `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise DrillError(f"{what} within {timeout} s")


def _provider(plan):
    if lab_provider(plan) is None:
        raise DrillError(f"lab {plan.name} is not up: bring it up and deploy it first "
                         "(`kubelab create`)")
    return providers.resolve(plan)


def power_cut(plan, host):
    """Cut a host's power: no shutdown, its peers see it vanish."""
    _provider(plan).power_cut(plan, host)


def answers_ssh(plan, host):
    try:
        return subprocess.run(ssh_command(plan, host, "true", shared=False),
                              capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False    # a booting VM under software emulation: sshd accepts, slow to answer


def power_on(plan, host):
    """Power a host on again and wait until it answers over SSH."""
    _provider(plan).power_on(plan, host)
    wait_until(lambda: answers_ssh(plan, host),
               f"{host.name} did not answer over SSH after its power-on", SSH_TIMEOUT)


def main(plan, name, as_json=False):
    """Run drill `name`; prints the timeline and figures (or one JSON object)."""
    drill = importlib.import_module(f"kubelab.drills.{name}")
    check_routes(plan)      # before the first SSH: never along this machine's default route
    timeline = Timeline(quiet=as_json)
    if not as_json:
        print(f"drill {name} on lab {plan.name}")
    try:
        figures = drill.run(plan, timeline)
    except DrillError:
        if as_json:     # the timeline so far, which the JSON would have carried
            for at, text in timeline.events:
                print(f"  {at:7.2f} s  {text}", file=sys.stderr)
        raise
    if as_json:
        json.dump({**figures, "timeline": timeline.events}, sys.stdout, indent=2)
        print()
    else:
        print("figures:")
        for key, value in figures.items():
            print(f"  {key:28} {value}")
    return figures
