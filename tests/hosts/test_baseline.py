"""The baseline stage on every running host."""
from hostutil import run_ok


def test_hostname_and_fqdn(source, connect):
    host = connect(source)
    assert run_ok(host, "hostname").strip() == source.name
    assert run_ok(host, "hostname -f").strip() == source.fqdn
