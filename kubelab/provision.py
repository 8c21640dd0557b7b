"""`kubelab provision` and `kubelab verify`: the native tools, run for the lab's hosts.

provision runs `pyinfra -y inventory.py deploy.py` and verify runs `pytest tests/hosts`
with the spec in $KUBELAB_SPEC, limited to the hosts the lab brought up (the ones in its
ssh config) and, with `until`, to the stages up to that one (pyinfra's `--data
kubelab_until=STAGE`, pytest's `--until=STAGE`). Both print one progress line per stage and keep the tools' full output in
the lab's state directory.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from kubelab import stacks
from kubelab.errors import LabError
from kubelab.inventory import reachable
from kubelab.paths import REPO, lab_dir, lab_provider, ssh_config
from kubelab.providers import resolve
from kubelab.progress import phase
from kubelab.vagrant import check_routes
from tasks import UNTIL

STAGE = re.compile(r"^--> Starting operation: ([^|]+?)(?: \|.*)?\s*$")
MAX_CHECK_WORKERS = 4
# Seconds an overdue deploy has to print its stacks before it is stopped.
STACKS_SECONDS = 5
TOTAL = re.compile(r"^\s*Grand total\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$")


class ProvisionError(LabError):
    pass


def pyinfra_command():
    """pyinfra's own launcher. Not `python -m pyinfra`: that imports pyinfra before gevent
    patches the standard library, and the first SSH connection through a ProxyCommand then
    waits forever (pyinfra 3.10, paramiko 4.0)."""
    beside = Path(sys.executable).with_name("pyinfra")
    return [str(beside)] if beside.exists() else [shutil.which("pyinfra") or "pyinfra"]


def up_hosts(plan):
    """Planned hosts reachable now: those of the spec's ssh_hosts, and those in the ssh
    config `kubelab up` wrote (in plan order), once they are known to run and to be reached
    over the lab's own network."""
    names = reachable(plan)
    hosts = [h.name for h in plan.hosts if h.name in names]
    if not hosts:
        raise ProvisionError(f"no host of lab {plan.name} is up (no ssh config at "
                             f"{ssh_config(plan)}): bring the lab up first (kubelab up)")
    _check_running(plan, hosts)
    check_routes(plan)
    return hosts


def _check_running(plan, hosts):
    """The hosts of a lab kubelab brought up are running (its provider says so): else pyinfra
    would only say "No hosts remaining!" and the checks fail one by one."""
    if lab_provider(plan) is None:
        return      # brought up by hand (`vagrant up`): check_routes still guards
    states = dict(resolve(plan).status(plan))
    down = [f"{name} ({states[name]})" for name in hosts
            if name in states and not states[name].startswith("running")]
    if down:
        raise ProvisionError(f"lab {plan.name} is not up: {', '.join(down)}; bring it up "
                             f"with `kubelab up` (it writes the ssh config {ssh_config(plan)} "
                             "again)")


def lab_env(spec_path):
    return {**os.environ, "KUBELAB_SPEC": str(Path(spec_path).resolve())}


def totals(output):
    """pyinfra's result totals {hosts, changed, errors, unchanged} (None if it printed none)."""
    for line in reversed(output.splitlines()):
        match = TOTAL.match(line)
        if match:
            return dict(zip(("hosts", "changed", "errors", "unchanged"),
                            (0 if v == "-" else int(v) for v in match.groups())))
    return None


CONNECTING = "Connecting, loading facts and the deploy"


def deploy(plan, spec_path, log, hosts=None, until=None, launcher=None, stage_seconds=None,
           timeout=None):
    """Run the deploy on `hosts` (default: up_hosts), one progress phase per stage, its
    stages up to `until` (default: all), with pyinfra's own launcher or `launcher` (a command
    that takes pyinfra's arguments). Returns (exit code, output, seconds); fills
    `stage_seconds` (a dict) with each phase's seconds. A deploy still running after
    `timeout` seconds prints where it waits and is stopped (a failure, with that output)."""
    limits = [arg for name in hosts or up_hosts(plan) for arg in ("--limit", name)]
    stages = ["--data", f"{UNTIL}={until}"] if until else []
    cmd = [*(launcher or pyinfra_command()), "-y", *limits, *stages, "inventory.py", "deploy.py"]
    start = time.monotonic()
    lines = []
    starts = [(CONNECTING, start)]
    overdue = threading.Event()
    with open(log, "w") as out, ExitStack() as guard:
        # Its own process group: stopped, it takes its SSH proxies with it.
        proc = subprocess.Popen(cmd, cwd=REPO, env=lab_env(spec_path), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        guard.callback(_stop, proc)         # also when the caller is interrupted
        if timeout:
            timer = threading.Timer(timeout, _stop_overdue, (proc, overdue))
            timer.start()
            guard.callback(timer.cancel)
        with ExitStack() as stages:
            stages.enter_context(phase(CONNECTING))
            for line in proc.stdout:
                out.write(line)
                lines.append(line)
                match = STAGE.match(line)
                # Stages overlap where their hosts differ: a phase ends when the next starts.
                if match and match.group(1) not in dict(starts):
                    starts.append((match.group(1), time.monotonic()))
                    stages.close()
                    stages.enter_context(phase(match.group(1)))
            code = proc.wait()
        if overdue.is_set():        # a failure, whatever pyinfra said
            code = code or 1
            lines.append(f"kubelab: the deploy ran over its {timeout} s and was stopped "
                         "(where it waited is above)\n")
            out.write(lines[-1])
    end = time.monotonic()
    if stage_seconds is not None:
        ends = [t for _, t in starts[1:]] + [end]
        stage_seconds.update({name: stop - t for (name, t), stop in zip(starts, ends)})
    return code, "".join(lines), end - start


def failure_output(output, size=4000):
    """What to show of a failed deploy's output: its end; for a deploy stopped for its time,
    what it did last and, whole, where it waited."""
    before, header, stacks_and_end = output.partition(stacks.HEADER)
    return before[-size:] + header + stacks_and_end if header else output[-size:]


def _stop_overdue(proc, overdue):
    """Ask pyinfra where it waits (kubelab/stacks.py), give it time to say so, stop it."""
    overdue.set()
    proc.send_signal(stacks.DUMP)
    try:
        proc.wait(STACKS_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    _stop(proc)


def _stop(proc):
    """Stop what is left of a deploy: pyinfra, and what it started (a child left behind
    would keep its output open)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:      # all of it ended
        pass
    proc.wait()


def provision(plan, spec_path, until=None):
    """Configure every host that is up (the stages up to `until`); returns the exit code for
    the CLI."""
    log = lab_dir(plan) / "provision.log"
    hosts = up_hosts(plan)
    code, output, seconds = deploy(plan, spec_path, log, hosts, until)
    result = totals(output)
    if code != 0 or not result or not result["hosts"] or result["errors"]:
        tail = failure_output(output, 3000)
        print(f"provision FAILED (pyinfra exit {code}) after {seconds:.1f} s; "
              f"full output: {log}\n{tail}", file=sys.stderr)
        return code or 1
    print(f"provisioned {len(hosts)} hosts in {seconds:.1f} s: "
          f"{result['changed']} changes, {result['unchanged']} unchanged (log: {log})")
    return 0


def check_workers(hosts):
    """pytest-xdist workers for the checks of `hosts` hosts (tests/hosts/conftest.py makes
    it the default): the checks wait on SSH, not on the CPU, but each worker costs a second
    of CPU to start; none for a small lab."""
    workers = min(MAX_CHECK_WORKERS, hosts // 4)
    return workers if workers > 1 else 0


def verify_command(plan, until=None):
    """The host checks of every host that is up (in parallel: see check_workers), those of
    the stages up to `until`."""
    hosts = ",".join(f"ssh://{name}" for name in up_hosts(plan))
    return [sys.executable, "-m", "pytest", "tests/hosts", f"--hosts={hosts}",
            f"--ssh-config={ssh_config(plan)}", "-p", "no:cacheprovider", "-q",
            *([f"--until={until}"] if until else [])]


def verify(plan, spec_path, until=None):
    """Run the host checks on every host that is up (those of the stages up to `until`);
    returns pytest's exit code."""
    with phase(f"Checking lab {plan.name} (pytest tests/hosts)"):
        return subprocess.run(verify_command(plan, until), cwd=REPO,
                              env=lab_env(spec_path)).returncode
