"""tests/hosts/shell.py: the agent that runs the host checks' commands, one per host. Here it
runs on this machine (same protocol, no SSH), behind the same backend the checks use."""
import subprocess
import sys

import pytest
from testinfra.host import Host

from tests.hosts.shell import AGENT, ShellBackend


class LocalAgent(ShellBackend):
    def _start(self):
        return subprocess.Popen([sys.executable, "-c", AGENT], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def host():
    backend = LocalAgent("here")
    host = Host(backend)
    backend.set_host(host)
    yield host
    backend.close()


def test_commands_run_in_a_shell_with_their_status_and_both_streams(host):
    result = host.run("echo out; echo err >&2; exit 3")
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert host.run("test -n %s", "a b").rc == 0     # testinfra's quoting


def test_python_runs_in_the_agent_as_python3_c_would(host):
    pid = host.backend.run_python("import os; print(os.getpid())").stdout
    again = host.backend.run_python("import os, sys; print(os.getpid(), sys.argv[1:])", "a b", 7)
    assert again.stdout == f"{pid.strip()} ['a b', '7']\n"      # the same process: no new one
    assert host.run("echo $PPID").stdout == pid


def test_python_failures_are_results_and_the_agent_goes_on(host):
    failed = host.backend.run_python("raise ValueError('no')")
    assert failed.rc == 1 and "ValueError: no" in failed.stderr
    assert host.backend.run_python("import sys; print('x'); sys.exit(4)").rc == 4
    assert host.backend.run_python("import sys; sys.exit('why')").rc == 1
    assert host.backend.run_python("print('still here')").stdout == "still here\n"


def test_a_lost_session_is_an_error_that_names_the_host(host):
    pid = host.backend.run_python("import os; print(os.getpid())").stdout.strip()
    with pytest.raises(RuntimeError, match="here: the SSH session ended"):
        host.run(f"kill {pid}")
    assert host.run("true").rc == 0     # a new agent
