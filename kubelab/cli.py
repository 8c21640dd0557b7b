"""kubelab: one spec file -> a running Kubernetes lab.

  plan      hosts, networks, addresses and ranges (--json for machines)
  render    write the Vagrantfile, and every derived file under .kubelab/<lab>/rendered
  diagram   draw the network map as an SVG image
  image     build the local Debian image (container rootfs + libvirt box)
  host      check this machine for what a provider needs / install it
  up        bring the hosts up (virtualbox, libvirt or nspawn containers)
  provision configure every host group in order (pyinfra)
  verify    check every host (pytest + testinfra)
  create    up + provision + verify
  status    what is running
  kubeconfig  the path of the lab's kubeconfig (kubectl --kubeconfig PATH ...)
  headlamp  Headlamp's address and a login token of its read-only account
  drill     break one part of the running lab on purpose and measure (a failure drill)
  destroy   remove every host, network and disk the lab made (asks first)
"""
import argparse
import json
import os
import shutil
import sys

from kubelab import secrets
from kubelab.errors import LabError
from kubelab.paths import DEFAULT_SPEC, lab_dir, lab_provider
from kubelab.plan import load_plan
from kubelab.spec import PROVIDERS, SpecError


def _provider(plan, requested=None):
    """The provider a command uses (kubelab.providers.resolve); imported only by the
    commands that need one, as it loads Vagrant's and the container lab's modules."""
    from kubelab.providers import resolve
    return resolve(plan, requested)


def cmd_plan(plan, args):
    from kubelab.table import plan_table
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan_table(plan))


def cmd_render(plan, args):
    from kubelab.artifacts import artifacts
    from kubelab.vagrant import vagrantfile_path, write_vagrantfile
    print(f"wrote {write_vagrantfile(plan, vagrantfile_path(plan, args.spec))}")
    # Written aside, then swapped in whole: no stale file of a host the spec dropped.
    out, fresh = lab_dir(plan) / "rendered", lab_dir(plan) / "rendered.new"
    shutil.rmtree(fresh, ignore_errors=True)
    files = artifacts(plan)
    for name, text in files.items():
        (fresh / name).parent.mkdir(parents=True, exist_ok=True)
        (fresh / name).write_text(text)
    shutil.rmtree(out, ignore_errors=True)
    fresh.rename(out)
    print(f"wrote {len(files)} files (plan, inventory, diagram, each host's configs) to {out}")


def cmd_diagram(plan, args):
    from kubelab.diagram import svg
    path = args.output or lab_dir(plan) / "network.svg"
    with open(path, "w") as out:
        out.write(svg(plan))
    print(f"wrote {path}")


def cmd_image(plan, args):
    from kubelab import box, image
    root = image.build(force=args.force)
    print(f"rootfs: {root}")
    for stage, versions in image.stage_versions(root).items():
        print(f"  {stage}: {versions}")
    if not args.rootfs_only:
        box.build_box(plan.boxes["libvirt"], force=args.force)


def cmd_host(plan, args):
    from kubelab import host
    if args.action == "setup":
        return host.setup()
    provider = _provider(plan, args.provider)
    problems = provider.preflight(plan)
    for note in provider.notes(plan):
        print(f"note: {note}")
    for problem in problems:
        print(f"- {problem}")
    print("host is ready" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_up(plan, args):
    provider = _provider(plan, args.provider)
    problems = provider.preflight(plan)
    if problems:
        print("not starting; fix these first:\n" + "\n".join(f"- {p}" for p in problems),
              file=sys.stderr)
        return 1
    hosts = args.hosts.split(",") if args.hosts else None
    ssh_config = provider.up(plan, hosts)
    print(f"lab {plan.name} is up ({provider.name}); ssh config: {ssh_config}")


def cmd_provision(plan, args):
    from kubelab.provision import provision
    return provision(plan, args.spec, args.until)


def cmd_verify(plan, args):
    from kubelab.provision import verify
    return verify(plan, args.spec, args.until)


def cmd_create(plan, args):
    return cmd_up(plan, args) or cmd_provision(plan, args) or cmd_verify(plan, args)


def cmd_status(plan, args):
    from kubelab.nspawn import stale_labs
    for name, state in stale_labs().items():
        print(f"stale container lab {name}: its state dir {state} is gone; `kubelab destroy "
              f"--provider nspawn` with a spec of lab name {name} removes it")
    if lab_provider(plan) is None:
        print(f"lab {plan.name} is not up (`kubelab up` brings it up)")
        return
    provider = _provider(plan)
    print(f"lab {plan.name} ({provider.name})")
    for name, state in provider.status(plan):
        print(f"  {name:20} {state}")


def _kubeconfig(plan):
    from tasks.control_plane import kubeconfig_path
    path = kubeconfig_path(plan)
    if not path.exists():
        raise LabError(f"no kubeconfig at {path} yet: the deploy fetches it from the first "
                       "master once the cluster is up (`kubelab provision` on VMs or hosts)")
    return path


def cmd_kubeconfig(plan, args):
    print(_kubeconfig(plan))


def cmd_headlamp(plan, args):
    """Headlamp's URL, and a token (1 h) of its read-only account to log in with."""
    import subprocess

    from tasks.addons import HEADLAMP_ACCOUNT, headlamp_address
    if not shutil.which("kubectl"):
        raise LabError("kubectl is not installed on this machine; install it (e.g. from "
                       "pkgs.k8s.io) or run `kubectl -n kube-system create token "
                       f"{HEADLAMP_ACCOUNT}` on a master")
    run = subprocess.run(["kubectl", "--kubeconfig", str(_kubeconfig(plan)), "-n", "kube-system",
                          "create", "token", HEADLAMP_ACCOUNT, "--duration", "1h"],
                         capture_output=True, text=True, timeout=60)
    if run.returncode:
        raise LabError(f"kubectl create token failed: {run.stderr.strip()}")
    print(f"Headlamp: http://{headlamp_address(plan)}/ (read-only); token, valid 1 h:")
    print(run.stdout.strip())


def cmd_drill(plan, args):
    from kubelab import drills
    drills.main(plan, args.name, args.json)


def cmd_destroy(plan, args):
    if lab_provider(plan) is None and args.provider is None:
        print(f"lab {plan.name} was not brought up from this state dir; to remove what a "
              "provider left anyway, name it: `kubelab destroy --provider P`", file=sys.stderr)
        return 1
    provider = _provider(plan, args.provider)
    if not args.yes:
        answer = input(f"Destroy lab {plan.name} ({provider.name}): every host, network and "
                       "disk it made? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing destroyed")
            return 1
    provider.destroy(plan)
    secrets.remove(plan)
    print(f"lab {plan.name} destroyed")


def _parser():
    parser = argparse.ArgumentParser(prog="kubelab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default=str(DEFAULT_SPEC), help="spec file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help):
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        return p

    from tasks import stage_names

    def until(p):
        p.add_argument("--until", metavar="STAGE", choices=stage_names(),
                       help="only the deploy stages up to this one, and their checks: "
                            f"{', '.join(stage_names())}")

    add("plan", cmd_plan, "show the address plan").add_argument(
        "--json", action="store_true", help="machine-readable output")
    add("render", cmd_render, "write the Vagrantfile and every derived file")
    add("diagram", cmd_diagram, "draw the network map (SVG)").add_argument(
        "-o", "--output", help="file to write (default: the lab's state dir)")
    p = add("image", cmd_image, "build the local Debian image")
    p.add_argument("action", choices=["build"])
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--rootfs-only", action="store_true", help="only the container rootfs")
    p = add("host", cmd_host, "check or set up this machine")
    p.add_argument("action", choices=["check", "setup"])
    p.add_argument("--provider", choices=PROVIDERS, help="default: the lab's, else the spec's")
    for name, func, help in (("up", cmd_up, "bring the hosts up"),
                             ("create", cmd_create, "up + provision + verify")):
        p = add(name, func, help)
        p.add_argument("--provider", choices=PROVIDERS, help="default: the lab's, else the spec's")
        p.add_argument("--hosts", help="a comma-separated subset of the plan's hosts")
        if name == "create":
            until(p)
    until(add("provision", cmd_provision, "configure every host (pyinfra)"))
    until(add("verify", cmd_verify, "check every host (pytest + testinfra)"))
    add("status", cmd_status, "what is running")
    add("kubeconfig", cmd_kubeconfig, "the path of the lab's kubeconfig")
    add("headlamp", cmd_headlamp, "Headlamp's address and a read-only login token")
    from kubelab.drills import names as drill_names
    p = add("drill", cmd_drill, "a failure drill on the running lab")
    p.add_argument("name", choices=drill_names())
    p.add_argument("--json", action="store_true", help="one JSON object: figures + timeline")
    p = add("destroy", cmd_destroy, "remove the lab")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.add_argument("--provider", choices=PROVIDERS, help="when the lab's provider is unknown")
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        plan = load_plan(args.spec)
    except SpecError as err:
        print(err, file=sys.stderr)
        return 2
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        return args.func(plan, args) or 0
    except BrokenPipeError:
        # The reader went away (`kubelab plan | head`): stop quietly, as a Unix tool does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except LabError as err:
        print(f"kubelab {args.command}: {err}", file=sys.stderr)
        return 1
    except OSError as err:      # a path that cannot be written, a tool that is missing
        print(f"kubelab {args.command}: {err}", file=sys.stderr)
        return 1
