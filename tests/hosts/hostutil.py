"""Small helpers the host checks share."""
import json
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path


def run_ok(host, command):
    result = host.run(command)
    assert result.rc == 0, f"{command!r} failed (rc {result.rc}): {result.stderr.strip()}"
    return result.stdout


def python_ok(host, code, *args):
    """`python3 -c code args` on lab host `host` (run by its agent: shell.py): its output."""
    result = host.backend.run_python(code, *args)
    assert result.rc == 0, f"{result.command!r} failed (rc {result.rc}): {result.stderr.strip()}"
    return result.stdout


def links(host):
    """{mac: (ifname, [addresses])} of the host."""
    data = json.loads(run_ok(host, "ip -j addr show"))
    return {link["address"]: (link["ifname"],
                              [a["local"] for a in link.get("addr_info", [])
                               if a["family"] == "inet"])
            for link in data if link.get("link_type") == "ether"}


# A TCP listener that records every connection: it prints its port, then "peer marker" for
# each connection (the marker is what the peer sent). It ends after `seconds` without a
# connection; the checks kill it by PID before that.
LISTENER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(8)
s.settimeout(float(sys.argv[2]))
print(s.getsockname()[1], flush=True)
while True:
    conn, peer = s.accept()
    conn.settimeout(2)
    try:
        said = conn.recv(64).decode(errors="replace").strip()
    except OSError:
        said = ""
    print(peer[0], said or "-", flush=True)
    conn.close()
"""
LISTEN_SECONDS = 300

# A TCP connection attempt: prints "connected <first line the server sent>" or the error
# (EHOSTUNREACH is the gateway's icmp-admin-prohibited, ECONNREFUSED a closed port). With a
# device, bound to it (SO_BINDTODEVICE): the management subnet is on-link for every host, so
# only this way does a connection to it take the default route through the gateway.
CONNECT = """
import errno, socket, sys
device, address, port, marker = sys.argv[1:5]
s = socket.socket()
s.settimeout(5)
if device:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
try:
    s.connect((address, int(port)))
    s.sendall(marker.encode() + b"\\n")
    first = s.recv(64).decode(errors="replace").splitlines()
    print("connected", first[0] if first else "")
except socket.timeout:
    print("timeout")
except OSError as err:
    print(errno.errorcode.get(err.errno, err.errno))
"""


def connect_from(host, address, port, marker, device=""):
    """What a TCP connection from lab host `host` to address:port met (see CONNECT)."""
    return python_ok(host, CONNECT, device, address, port, marker).strip()


def connect_from_lab_side(prefix, address, port, marker):
    """The same from this machine's side of the lab (`prefix`: providers.management_side)."""
    run = subprocess.run([*prefix, sys.executable, "-c", CONNECT, "", str(address), str(port),
                          marker], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


class Listener:
    """A LISTENER started somewhere: .port, and .seen() -> [(peer, marker)] so far, read
    with `output()` (what it printed)."""

    def __init__(self, output):
        self._output = output
        deadline = time.monotonic() + 20
        while not self._lines() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self._lines(), f"the listener did not start: {output()!r}"
        self.port = int(self._lines()[0])

    def _lines(self):
        return self._output().splitlines()

    def seen(self):
        return [tuple(line.split(" ", 1)) for line in self._lines()[1:]]


@contextmanager
def listening_on(host, address):
    """A Listener on lab host `host`, bound to `address`; killed by PID at the end."""
    started = run_ok(host, f"f=$(mktemp); nohup python3 -c {shlex.quote(LISTENER)} "
                           f"{address} {LISTEN_SECONDS} < /dev/null > $f 2>&1 & echo $! $f")
    pid, path = started.split()
    try:
        yield Listener(lambda: run_ok(host, f"cat {path}"))
    finally:
        host.run(f"kill {pid}; rm -f {path}")


@contextmanager
def listening_on_lab_side(prefix, address):
    """A Listener on this machine's side of the lab (`prefix`: providers.management_side),
    bound to `address`; killed by PID at the end."""
    with tempfile.NamedTemporaryFile("r") as out:
        proc = subprocess.Popen([*prefix, sys.executable, "-c", LISTENER, str(address),
                                 str(LISTEN_SECONDS)], stdout=out, stderr=subprocess.STDOUT)
        try:
            yield Listener(lambda: Path(out.name).read_text())
        finally:
            proc.kill()
            proc.wait()


class Listeners:
    """Listeners for a whole run of one pytest process: the first ask for a place and address
    starts one, the later ones get it (the checks that share one tell their connections
    apart by their markers). All are killed at close()."""

    def __init__(self):
        self._started = {}
        self._stack = ExitStack()

    def on(self, host, address):
        """A Listener on lab host `host` (testinfra), bound to `address`."""
        return self._get(("host", host.backend.hostname, str(address)),
                         lambda: listening_on(host, address))

    def on_lab_side(self, prefix, address):
        """A Listener on this machine's side of the lab (`prefix`), bound to `address`."""
        return self._get(("lab side", tuple(prefix), str(address)),
                         lambda: listening_on_lab_side(prefix, address))

    def _get(self, key, start):
        if key not in self._started:
            self._started[key] = self._stack.enter_context(start())
        return self._started[key]

    def close(self):
        self._stack.close()
