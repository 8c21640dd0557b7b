"""Count what a deploy asks of each host over SSH: every command (a fact, an operation's
command, the copy after an upload), every file upload and download, and every connection.
Each of them is at least one round trip to the host. Counted per stage and per host.

    python benchmarks/roundtrips.py [PYINFRA ARGS...]    (default: -y inventory.py deploy.py)

Run it from the repository with KUBELAB_SPEC set, on a lab that is up; on a deployed lab
that is the no-change run, whose every command is a state check. It is pyinfra itself,
started through this launcher, which wraps pyinfra's SSH connector to count. With
KUBELAB_ROUNDTRIPS=FILE it also writes the counts there as JSON (benchmarks/pipeline.py).
"""
import json
import os
import sys
from collections import defaultdict

KINDS = ("commands", "uploads", "downloads", "connects")
BEFORE_ANY_OPERATION = "(connect, facts of the deploy file)"


def stage_of(state, host):
    """The stage of the operation `host` is running: its name before ' | '."""
    op_hash = host.nested_executing_op_hash or host.executing_op_hash
    if op_hash is None:
        return BEFORE_ANY_OPERATION
    names = sorted(state.get_op_meta(op_hash).names)
    return names[0].split(" | ")[0] if names else BEFORE_ANY_OPERATION


def count_into(counts, stages, connector_class):
    """Wrap `connector_class`'s methods that reach the host: each call adds one to
    counts[host name][stage][kind]; `stages` gets each stage when it is first seen."""
    def counting(method, kind):
        def wrapper(self, *args, **kwargs):
            stage = stage_of(self.state, self.host)
            if stage not in stages:
                stages.append(stage)
            counts[self.host.name][stage][kind] += 1
            return method(self, *args, **kwargs)
        return wrapper

    for name, kind in (("run_shell_command", "commands"), ("_put_file", "uploads"),
                       ("get_file", "downloads"), ("connect", "connects")):
        setattr(connector_class, name, counting(getattr(connector_class, name), kind))


def round_trips(by_kind):
    return sum(by_kind.get(kind, 0) for kind in KINDS)


def table(counts, order):
    """Lines: per stage (in `order`), the round trips of its hosts (all, per host: mean and
    most); per host, its round trips."""
    stages = {stage: [] for stage in order}
    for by_stage in counts.values():
        for stage, by_kind in by_stage.items():
            stages[stage].append(round_trips(by_kind))
    lines = [f"{'stage':38} {'hosts':>5} {'all':>6} {'per host':>9} {'most':>5}"]
    for stage, per_host in stages.items():
        lines.append(f"{stage:38} {len(per_host):>5} {sum(per_host):>6} "
                     f"{sum(per_host) / len(per_host):>9.1f} {max(per_host):>5}")
    totals = {name: sum(round_trips(k) for k in by_stage.values())
              for name, by_stage in counts.items()}
    lines.append(f"{'every stage':38} {len(totals):>5} {sum(totals.values()):>6} "
                 f"{sum(totals.values()) / max(len(totals), 1):>9.1f} "
                 f"{max(totals.values(), default=0):>5}")
    lines.append("per host: " + ", ".join(f"{name} {n}" for name, n in totals.items()))
    return lines


def main(args):
    # pyinfra's CLI package first: it makes gevent patch the standard library.
    from pyinfra_cli.main import main as pyinfra_main
    from pyinfra.connectors.ssh import SSHConnector

    counts = defaultdict(lambda: defaultdict(lambda: dict.fromkeys(KINDS, 0)))
    stages = []
    count_into(counts, stages, SSHConnector)
    sys.argv = ["pyinfra", *(args or ["-y", "inventory.py", "deploy.py"])]
    try:
        pyinfra_main()
    finally:
        print("\nround trips to each host (benchmarks/roundtrips.py):")
        print("\n".join(table(counts, stages)), flush=True)
        if os.environ.get("KUBELAB_ROUNDTRIPS"):
            with open(os.environ["KUBELAB_ROUNDTRIPS"], "w") as out:
                json.dump({"stages": stages, "counts": counts}, out)


if __name__ == "__main__":
    main(sys.argv[1:])
