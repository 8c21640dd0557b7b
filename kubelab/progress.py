"""Phase-by-phase progress for long steps: one line when a phase starts, one when it ends."""
import sys
import time
from contextlib import contextmanager


@contextmanager
def phase(title):
    print(f"==> {title} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        yield
    except BaseException:
        print(f"<== {title}: FAILED after {time.monotonic() - start:.1f} s",
              file=sys.stderr, flush=True)
        raise
    print(f"<== {title}: done in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
