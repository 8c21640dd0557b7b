"""The whole pipeline on the container lab, at several sizes: up, first deploy, no-change
re-run, host checks, memory per host, destroy. A table per size, with each deploy's time
and round trips per host stage by stage (the deploys run through benchmarks/roundtrips.py),
then the marginal cost of one more host between the smallest and the largest.

    python benchmarks/pipeline.py [SIZES...]      (root; default 11 22 50)

11 hosts is the default fleet (kubelab.yaml), 22 examples/large.yaml; any other size is a
spec generated on benchmarks/scale.yaml's wide networks (more workers). Each lab runs under
a name of its own, in a temporary state dir, and is destroyed at the end, also on failure.
RSS counts shared pages once per process; PSS shares them out (what a host really costs)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OWN_STATE = "KUBELAB_STATE" not in os.environ
os.environ.setdefault("KUBELAB_STATE", tempfile.mkdtemp(prefix="kubelab-bench-"))
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from kubelab import image, nspawn, provision  # noqa: E402
from kubelab.plan import load_plan  # noqa: E402
from roundtrips import BEFORE_ANY_OPERATION, round_trips  # noqa: E402

COUNTER = REPO / "benchmarks" / "roundtrips.py"

KNOWN = {11: REPO / "kubelab.yaml", 22: REPO / "examples" / "large.yaml"}
# Fixed parts of a generated size; the rest are workers.
GENERATED = {"loadbalancers": 2, "masters": 5, "storage": 6}


def spec_for(size, folder):
    """A spec file of `size` hosts under a lab name of this run's own."""
    if size in KNOWN:
        data = {"extends": str(KNOWN[size])}
    else:
        workers = size - 1 - sum(GENERATED.values())
        if workers < 1:
            raise SystemExit(f"{size} hosts: too few for a generated lab (at least "
                             f"{sum(GENERATED.values()) + 2})")
        data = {"extends": str(REPO / "benchmarks" / "scale.yaml"),
                "hosts": {**{g: {"count": n} for g, n in GENERATED.items()},
                          "workers": {"count": workers}}}
    data["name"] = f"kbench{size}-{os.getpid()}"
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def memory_mib(plan):
    """(RSS, PSS) in MiB of every process of every container of the lab."""
    rss = pss = 0
    for pid in nspawn.container_pids(plan):
        for p in nspawn.descendants(pid):
            try:
                for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):
                pass
    return rss / 1024, pss / 1024


def timed(func, *args):
    start = time.monotonic()
    result = func(*args)
    return result, time.monotonic() - start


def deploy(plan, spec, log):
    """The deploy, counted by benchmarks/roundtrips.py: (pyinfra's totals, seconds,
    {stage: seconds}, {stage: [round trips of each of its hosts]})."""
    counted = log.with_suffix(".json")
    os.environ["KUBELAB_ROUNDTRIPS"] = str(counted)
    stage_seconds = {}
    try:
        code, output, seconds = provision.deploy(plan, spec, log,
                                                 launcher=[sys.executable, str(COUNTER)],
                                                 stage_seconds=stage_seconds)
    finally:
        del os.environ["KUBELAB_ROUNDTRIPS"]
    totals = provision.totals(output)
    if code != 0 or not totals or totals["errors"]:
        raise SystemExit(f"deploy failed (exit {code}); see {log}")
    by_stage = {}
    for by_host in json.loads(counted.read_text())["counts"].values():
        for stage, by_kind in by_host.items():
            by_stage.setdefault(stage, []).append(round_trips(by_kind))
    by_stage[provision.CONNECTING] = by_stage.pop(BEFORE_ANY_OPERATION, [])
    return totals, seconds, stage_seconds, by_stage


def per_host(trips):
    return sum(trips) / len(trips) if trips else 0


def stage_lines(first, rerun):
    """Lines: each stage's seconds in the first deploy and the re-run, and the re-run's round
    trips per host of the stage (mean)."""
    lines = [f"  {'deploy by stage':42} {'first':>7} {'re-run':>8}  "
             "re-run round trips per host"]
    for stage, seconds in rerun[0].items():
        trips = rerun[1].get(stage, [])
        lines.append(f"    {stage:40} {first[0].get(stage, 0):5.1f} s {seconds:6.1f} s  "
                     f"{per_host(trips):5.1f} ({len(trips)} hosts)")
    return lines


def checks(plan, spec):
    run = subprocess.run(provision.verify_command(plan), cwd=REPO, env=provision.lab_env(spec),
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"checks failed:\n{run.stdout[-3000:]}")
    return run.stdout.strip().splitlines()[-1]


def measure(size, folder):
    spec = spec_for(size, folder)
    plan = load_plan(spec)
    rows = []
    _, up_s = timed(nspawn.up, plan)
    rows.append(("up (sshd answering on all)", up_s, ""))
    try:
        first, first_s, *first_stages = deploy(plan, spec, folder / f"{size}-deploy.log")
        rows.append(("first deploy", first_s, f"{first['changed']} changes"))
        second, second_s, *rerun_stages = deploy(plan, spec, folder / f"{size}-rerun.log")
        trips = sum(sum(t) for t in rerun_stages[1].values())
        rows.append(("no-change re-run", second_s, f"{second['changed']} changes; "
                     f"{trips / size:.1f} round trips per host"))
        summary, checks_s = timed(checks, plan, spec)
        rows.append(("host checks", checks_s, summary))
        rss, pss = memory_mib(plan)
        rows.append(("memory per host (PSS)", None,
                     f"{pss / size:.0f} MiB PSS, {rss / size:.0f} MiB RSS; "
                     f"all: {pss / 1024:.2f} GiB PSS"))
    finally:
        _, down_s = timed(nspawn.destroy, plan)
        rows.append(("destroy", down_s, ""))
    print(f"\n{size} hosts ({spec.name})")
    for what, seconds, note in rows:
        shown = f"{seconds:7.1f} s" if seconds is not None else " " * 9
        print(f"  {what:30} {shown}  {note}")
    print("\n".join(stage_lines(first_stages, rerun_stages)))
    return {what: seconds for what, seconds, _ in rows}


def main(sizes):
    _, image_s = timed(image.rootfs)
    print(f"image rootfs {image.image_hash()}: {image_s:.1f} s")
    folder = Path(tempfile.mkdtemp(prefix="kubelab-pipeline-"))
    try:
        results = {size: measure(size, folder) for size in sizes}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if OWN_STATE:
            shutil.rmtree(os.environ["KUBELAB_STATE"], ignore_errors=True)
    low, high = min(sizes), max(sizes)
    if high > low:
        print(f"\nmarginal cost of one more host, {low} -> {high} hosts:")
        for what, seconds in results[high].items():
            if seconds is not None:
                print(f"  {what:30} {(seconds - results[low][what]) / (high - low):6.2f} s")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [11, 22, 50])
