"""Container lab figures: image (cached) lookup, fleet up, memory per container, fleet down.

    python benchmarks/container_lab.py [SPEC]      (root; default examples/small.yaml)

Runs in a temporary state dir; the lab is destroyed at the end, also on failure. RSS counts
shared pages once per process; PSS shares them out (closer to what a host really costs)."""
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OWN_STATE = "KUBELAB_STATE" not in os.environ
os.environ.setdefault("KUBELAB_STATE", tempfile.mkdtemp(prefix="kubelab-bench-"))
sys.path.insert(0, str(REPO))

from kubelab import image, nspawn  # noqa: E402
from kubelab.plan import load_plan  # noqa: E402


def memory_kib(pids):
    """(RSS, PSS) in KiB summed over processes."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return rss, pss


def main(spec):
    plan = load_plan(spec)
    start = time.monotonic()
    image.rootfs()
    print(f"image rootfs (cached {image.image_hash()}): {time.monotonic() - start:.1f} s")
    start = time.monotonic()
    nspawn.up(plan)         # clears what it made itself if it fails
    print(f"up: {len(plan.hosts)} containers, sshd answering on all: "
          f"{time.monotonic() - start:.1f} s")
    try:
        time.sleep(10)      # let boots settle before measuring
        total_rss = total_pss = 0
        for pid, name in sorted(nspawn.container_pids(plan).items(), key=lambda x: x[1]):
            rss, pss = memory_kib(nspawn.descendants(pid))
            total_rss, total_pss = total_rss + rss, total_pss + pss
            print(f"  {name:14} RSS {rss / 1024:6.1f} MiB  PSS {pss / 1024:6.1f} MiB")
        print(f"  {'total':14} RSS {total_rss / 1024:6.1f} MiB  PSS {total_pss / 1024:6.1f} MiB")
    finally:
        start = time.monotonic()
        nspawn.destroy(plan)
        print(f"down: {time.monotonic() - start:.1f} s; left behind: "
              f"{nspawn.leftovers(plan) or 'nothing'}")
        if OWN_STATE:
            shutil.rmtree(os.environ["KUBELAB_STATE"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else REPO / "examples" / "small.yaml")
