"""Where a deploy waits: pyinfra's process prints the stack of every greenlet (one per host
and operation) when it gets DUMP. kubelab's deploy sends it before it stops a deploy that
ran past its time, so a hang names the operation and the call it waits in."""
import signal
import sys

DUMP = signal.SIGUSR1
HEADER = "kubelab: where the deploy is (every greenlet's stack):"


def _print_stacks(signum, frame):
    from gevent.util import format_run_info      # pyinfra's process runs under gevent
    print(HEADER, file=sys.stderr)
    print("\n".join(format_run_info()), file=sys.stderr, flush=True)


def install():
    """In pyinfra's process (inventory.py): a plain handler, which runs even while a
    greenlet keeps the gevent hub busy."""
    signal.signal(DUMP, _print_stacks)
