"""A testinfra SSH backend that keeps one shell per host: the checks' commands go over one
SSH session (one `sudo`) instead of one each. A new session costs ~40 ms and ~18 ms of CPU
on a lab host (sshd's session, sudo, a shell); a command sent to a running agent costs the
command itself, and Python a check runs there (run_python) runs in the agent: no process
either. Results are testinfra's (rc, stdout, stderr), so testinfra's modules (file, service,
socket...) work unchanged."""
import json
import shlex
import subprocess
import threading
from base64 import b64decode

from testinfra.backend.ssh import SshBackend

# Runs on the lab host (its python3; the checks use it anyway): one JSON line in, one JSON
# line out. The line is a command for /bin/sh -c (as testinfra's sudo /bin/sh -c runs it), or
# [code, args] for Python run in the agent itself, as `python3 -c code args` would run it
# (a check's socket probe: no new process for it).
AGENT = """
import base64, contextlib, io, json, subprocess, sys, traceback
def python(code, args):
    out, err, rc = io.StringIO(), io.StringIO(), 0
    sys.argv = ["-c", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            exec(code, {"__name__": "__main__"})
        except SystemExit as end:
            rc = end.code if isinstance(end.code, int) else int(end.code is not None)
        except Exception:
            traceback.print_exc()
            rc = 1
    return rc, out.getvalue().encode(), err.getvalue().encode()
for line in sys.stdin:
    asked = json.loads(line)
    if isinstance(asked, str):
        r = subprocess.run(asked, shell=True, stdin=subprocess.DEVNULL, capture_output=True)
        rc, out, err = r.returncode, r.stdout, r.stderr
    else:
        rc, out, err = python(*asked)
    print(json.dumps([rc, base64.b64encode(out).decode(), base64.b64encode(err).decode()]),
          flush=True)
"""


class ShellBackend(SshBackend):
    """testinfra's ssh backend (same URL and options), with its commands run by one agent
    per host, as root when sudo is asked."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.sudo_user:
            raise ValueError("ShellBackend runs its commands as root or as the SSH user")
        self._agent = None
        self._lock = threading.Lock()

    def _start(self):
        agent = f"python3 -c {shlex.quote(AGENT)}"
        cmd, cmd_args = self._build_ssh_command(f"sudo -n {agent}" if self.sudo else agent)
        return subprocess.Popen(self.quote(" ".join(cmd), *cmd_args), shell=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, command, *args, **kwargs):
        command = self.quote(command, *args)
        return self._ask(command, command)

    def run_python(self, code, *args):
        """`python3 -c code args` as run by the agent itself: its result (rc, stdout, stderr)."""
        args = [str(a) for a in args]
        return self._ask([code, args], shlex.join(["python3", "-c", code, *args]))

    def _ask(self, asked, shown):
        with self._lock:
            if self._agent is None or self._agent.poll() is not None:
                self._agent = self._start()
            agent = self._agent
            try:
                agent.stdin.write(json.dumps(asked) + "\n")
                agent.stdin.flush()
                answer = agent.stdout.readline()
            except BrokenPipeError:
                answer = ""
            if not answer:
                self._agent = None
                agent.kill()
                _, err = agent.communicate()
                raise RuntimeError(f"{self.host.name}: the SSH session ended ({err.strip()})")
        rc, out, err = json.loads(answer)
        return self.result(rc, self.encode(shown), b64decode(out), b64decode(err))

    def close(self):
        """End the agent (end of input), and its SSH session with it."""
        if self._agent is not None and self._agent.poll() is None:
            self._agent.stdin.close()
            self._agent.wait(timeout=10)
        self._agent = None
