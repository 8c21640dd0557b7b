"""paramiko's ProxyCommand, fixed for pyinfra, which runs under gevent.

The container lab's hosts are reached through a ProxyCommand (`ip netns exec ... nc`). pyinfra
patches the standard library with gevent, which makes the proxy's stdin non-blocking; a write
then takes only what the pipe has room for (gevent/gevent#1711). paramiko's send() ignores the
count, so on a loaded machine part of an SSH packet is lost: sshd drops the connection
("Corrupted MAC on input"), the proxy exits, and paramiko's recv() loops forever on the end of
its output (pyinfra at 100% CPU, no error). Here send() writes everything and recv() reports
the end of the output, which paramiko turns into a closed connection.
"""
import os
import socket
from select import select

from paramiko.proxy import ProxyCommand, ProxyCommandFailure


class WholeProxyCommand(ProxyCommand):
    def send(self, content):
        rest = memoryview(content)
        try:
            while rest:
                rest = rest[self.process.stdin.write(rest):]
        except OSError as error:
            raise ProxyCommandFailure(" ".join(self.cmd), error.strerror) from error
        return len(content)

    def recv(self, size):
        """What the proxy has written, at most `size` bytes; b"" once its output ended."""
        readable, _, _ = select([self.process.stdout], [], [], self.timeout)
        if not readable:
            raise socket.timeout()
        try:
            return os.read(self.process.stdout.fileno(), size)
        except BlockingIOError:
            raise socket.timeout() from None
        except OSError as error:
            raise ProxyCommandFailure(" ".join(self.cmd), error.strerror) from error


def install():
    """pyinfra's SSH client builds its socket from the ssh config's ProxyCommand with this."""
    from pyinfra.connectors.sshuserclient import client
    client.ProxyCommand = WholeProxyCommand
