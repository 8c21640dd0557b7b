"""The NAT check's stand-in for the internet: plan.outside on a link of its own (a bridge
without ports: this machine's kernel has no dummy driver) on this machine's side of the lab,
held for one run of the checks. In the container lab's namespace (which routes nothing off
the machine), or (VMs) in this machine's own, where a packet to an address it does not hold
follows the default route off the machine: so it is put there only if no network this
machine is on holds it (it would take a neighbour's place, such as its router's), and used
only while `ip route get` says it is local.

The first check that needs it puts it there; the other checks of the run, in any pytest
worker, find it (a file in the lab's state dir names the link and the run); the run's
controller removes it at its end, and a later run the link of a run that was killed."""
import fcntl
import json
import os
import subprocess
from contextlib import contextmanager

import pytest

from kubelab.paths import lab_dir
from kubelab.providers import management_side


def route(prefix, address):
    """`ip route get address` on this machine's side of the lab: (type, gateway, device)."""
    run = subprocess.run([*prefix, "ip", "-j", "route", "get", str(address)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        return None, None, None     # no route at all (the container lab's namespace)
    found = json.loads(run.stdout)[0]
    return found.get("type", "unicast"), found.get("gateway"), found.get("dev")


@contextmanager
def _locked(plan):
    with open(lab_dir(plan) / "outside.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield lab_dir(plan) / "outside.json"


def outside_address(plan, run):
    """The prefix of commands on the side that holds plan.outside now, for run `run` (the
    pid of the run's controller): put there by the first check that asks."""
    prefix = management_side(plan)
    with _locked(plan) as record:
        if record.exists() and _left_by_a_killed_run(record, run):
            _remove(prefix, record)
        if not record.exists():
            _put(plan, prefix, run, record)
    kind, _, device = route(prefix, plan.outside)
    assert kind == "local", (f"{plan.outside} is not local to this machine (route: {kind} via "
                             f"{device}): a packet to it would leave the machine; stopped")
    return prefix


def _put(plan, prefix, run, record):
    kind, via, device = route(prefix, plan.outside)
    if kind == "local" or (device and not via):
        where = "held by" if kind == "local" else "on a network of"
        pytest.fail(f"management.outside {plan.outside} is {where} this machine ({device}): "
                    "pick another address outside every network it is on (the spec's "
                    "management.outside)")
    link = f"kl-out{run}"[:15]
    ip = [*prefix, "ip"]
    subprocess.run([*ip, "link", "add", link, "type", "bridge"], check=True)
    record.write_text(json.dumps({"link": link, "run": run}))
    subprocess.run([*ip, "addr", "add", f"{plan.outside}/32", "dev", link], check=True)
    subprocess.run([*ip, "link", "set", link, "up"], check=True)


def release_outside(plan, run):
    """At the end of run `run` (its controller): remove the link it put there."""
    if not (lab_dir(plan) / "outside.json").exists():
        return
    with _locked(plan) as record:
        if record.exists() and json.loads(record.read_text())["run"] == run:
            _remove(management_side(plan), record)


def _remove(prefix, record):
    subprocess.run([*prefix, "ip", "link", "del", json.loads(record.read_text())["link"]],
                   capture_output=True)
    record.unlink()


def _left_by_a_killed_run(record, run):
    held = json.loads(record.read_text())["run"]
    if held == run:
        return False
    try:
        os.kill(held, 0)
    except ProcessLookupError:
        return True
    return False
