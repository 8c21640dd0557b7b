"""kubelab/sshproxy.py: the ProxyCommand pyinfra reaches the container lab through, under
gevent as pyinfra runs it (each case in its own Python, which gevent patches first)."""
import subprocess
import sys
import textwrap

from kubelab.paths import REPO

PATCHED = """
from gevent import monkey
monkey.patch_all()
from kubelab.sshproxy import WholeProxyCommand
"""


def under_gevent(code):
    run = subprocess.run([sys.executable, "-c", PATCHED + textwrap.dedent(code)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_a_slow_proxy_gets_every_byte_sent_to_it():
    # The proxy reads nothing for 0.5 s: its pipe fills at 64 KiB while 1 MB is sent.
    out = under_gevent("""
        proxy = WholeProxyCommand("sh -c 'sleep 0.5; wc -c'")
        proxy.settimeout(10)
        assert proxy.send(b"x" * 1_000_000) == 1_000_000
        proxy.process.stdin.close()
        out = b""
        while chunk := proxy.recv(4096):
            out += chunk
        print(out.decode())
    """)
    assert out.strip() == "1000000"


def test_the_end_of_the_proxys_output_is_an_end_not_a_busy_loop():
    out = under_gevent("""
        import time
        proxy = WholeProxyCommand("sh -c 'echo SSH-2.0-banner'")
        proxy.settimeout(10)
        start = time.monotonic()
        first, second = proxy.recv(4096), proxy.recv(4096)
        print(repr(first), repr(second), time.monotonic() - start < 5)
    """)
    assert out.strip() == r"b'SSH-2.0-banner\n' b'' True"


def test_a_silent_proxy_times_out_like_a_socket():
    out = under_gevent("""
        import socket
        proxy = WholeProxyCommand("sleep 5")
        proxy.settimeout(0.2)
        try:
            proxy.recv(10)
        except socket.timeout:
            print("timeout")
        proxy.close()
    """)
    assert out.strip() == "timeout"


def test_the_inventory_gives_pyinfra_the_fixed_proxy_command():
    out = under_gevent("""
        import runpy
        from pyinfra.connectors.sshuserclient import client
        runpy.run_path("inventory.py")
        print(client.ProxyCommand is WholeProxyCommand)
    """)
    assert out.strip() == "True"
