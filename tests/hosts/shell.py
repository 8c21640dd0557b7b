"""A testinfra SSH backend that keeps one shell per host: the checks' commands go over one
SSH session (one `sudo`) instead of one each. A new session costs ~40 ms and ~18 ms of CPU
on a lab host (sshd's session, sudo, a shell); a command sent to a running agent costs the
command itself. Results are testinfra's (rc, stdout, stderr), so testinfra's modules
(file, service, socket...) work unchanged."""
import json
import shlex
import subprocess
import threading
from base64 import b64decode

from testinfra.backend.ssh import SshBackend

# Runs on the lab host (its python3; the checks use it anyway): one JSON line in (the
# command, for /bin/sh -c, as testinfra's sudo /bin/sh -c runs it), one JSON line out.
AGENT = """
import base64, json, subprocess, sys
for line in sys.stdin:
    r = subprocess.run(json.loads(line), shell=True, stdin=subprocess.DEVNULL,
                       capture_output=True)
    print(json.dumps([r.returncode, base64.b64encode(r.stdout).decode(),
                      base64.b64encode(r.stderr).decode()]), flush=True)
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
        with self._lock:
            if self._agent is None or self._agent.poll() is not None:
                self._agent = self._start()
            agent = self._agent
            try:
                agent.stdin.write(json.dumps(command) + "\n")
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
        return self.result(rc, self.encode(command), b64decode(out), b64decode(err))

    def close(self):
        """End the agent (end of input), and its SSH session with it."""
        if self._agent is not None and self._agent.poll() is None:
            self._agent.stdin.close()
            self._agent.wait(timeout=10)
        self._agent = None
