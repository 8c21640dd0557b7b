"""The kubelab command: plan, render, up, provision, verify, status, destroy, diagram,
image build, host check/setup. Every command reads one spec (--spec)."""
import argparse
import json
import sys

from kubelab.paths import DEFAULT_SPEC
from kubelab.plan import load_plan
from kubelab.spec import SpecError

PROVIDERS = ["virtualbox", "libvirt", "nspawn"]


def cmd_plan(plan, args):
    from kubelab.table import plan_table
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan_table(plan))


def _parser():
    parser = argparse.ArgumentParser(prog="kubelab", description=__doc__)
    parser.add_argument("--spec", default=str(DEFAULT_SPEC), help="spec file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="show hosts, networks, addresses and ranges")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)
    return parser, sub


def main(argv=None):
    parser, _ = _parser()
    args = parser.parse_args(argv)
    try:
        plan = load_plan(args.spec)
    except SpecError as err:
        print(err, file=sys.stderr)
        return 2
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return args.func(plan, args) or 0
