"""Plan and render every artifact for 10, 100, 500 and 1000 hosts; print the times.

Not a timed test: it prints figures (target: 500 hosts under 2 s, linear growth).
Run: python benchmarks/scale.py
"""
import time
from pathlib import Path

from kubelab import validate
from kubelab.artifacts import artifacts
from kubelab.plan import build_plan
from kubelab.spec import read_yaml, schema_problems

SPEC = Path(__file__).with_name("scale.yaml")
SIZES = [10, 100, 500, 1000]


def spec_with(total):
    """The scale spec with enough workers for `total` hosts in all."""
    spec = read_yaml(SPEC)
    others = 1 + sum(spec["hosts"][g]["count"] for g in ("loadbalancers", "masters", "storage"))
    spec["hosts"]["workers"]["count"] = total - others
    assert not schema_problems(spec)
    return spec


def run(total):
    spec = spec_with(total)
    start = time.perf_counter()
    assert not validate.address_problems(spec)
    plan = validate.check(build_plan(spec), "scale")
    planned = time.perf_counter()
    rendered = artifacts(plan)
    done = time.perf_counter()
    size = sum(len(text) for text in rendered.values())
    return len(plan.hosts), planned - start, done - planned, len(rendered), size


def main():
    run(10)   # warm up imports and template compilation
    print(f"{'hosts':>6} {'plan s':>8} {'render s':>9} {'total s':>8} {'ms/host':>8} "
          f"{'files':>6} {'KiB':>7}")
    for total in SIZES:
        hosts, plan_s, render_s, files, size = run(total)
        whole = plan_s + render_s
        print(f"{hosts:>6} {plan_s:>8.3f} {render_s:>9.3f} {whole:>8.3f} "
              f"{1000 * whole / hosts:>8.3f} {files:>6} {size / 1024:>7.0f}")


if __name__ == "__main__":
    main()
