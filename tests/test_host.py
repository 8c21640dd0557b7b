"""`kubelab host check`: every missing piece named with its fix, before anything starts."""
import subprocess

import yaml

from kubelab import host, nspawn, vagrant
from kubelab.paths import DEFAULT_SPEC
from kubelab.plan import load_plan
from kubelab.providers import PROVIDERS
from kubelab.system import PACKAGES


def check(plan, provider):
    """What `kubelab host check --provider PROVIDER` lists."""
    return PROVIDERS[provider].preflight(plan)


def _plan(tmp_path, overrides=None):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"extends": str(DEFAULT_SPEC), **(overrides or {})}))
    return load_plan(path)


def test_missing_tools_are_named_with_their_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))      # nothing installed
    problems = check(_plan(tmp_path), "libvirt")
    for tool in ("vagrant", "qemu-system-x86_64", "qemu-img", "virsh", "libvirtd"):
        assert f"'{tool}' not found: apt-get install {PACKAGES[tool]} (or `kubelab host " \
               "setup`)" in problems, problems
    vbox = check(_plan(tmp_path), "virtualbox")
    assert any(p.startswith("VirtualBox is missing") for p in vbox)


def test_more_memory_than_the_machine_has_is_a_problem(tmp_path):
    plan = _plan(tmp_path, {"hosts": {"workers": {"memory": host.available_mib()}}})
    for provider in vagrant.VM_PROVIDERS:
        problems = [p for p in check(plan, provider) if "MiB available" in p]
        assert len(problems) == 1 and "hosts.*.memory" in problems[0]


def test_the_default_spec_fits_a_machine_like_ours(tmp_path, monkeypatch):
    """24 GiB, of which about 22 are available with nothing else running (not read from this
    machine: a lab running beside the tests would make the answer vary)."""
    monkeypatch.setattr(host, "available_mib", lambda: 22 * 1024)
    assert not [p for p in check(_plan(tmp_path), "libvirt") if "MiB available" in p]


def test_containers_need_their_own_tools_not_the_vms(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))      # nothing installed
    problems = check(_plan(tmp_path), "nspawn")
    for tool in nspawn.TOOLS:
        assert f"'{tool}' not found: apt-get install {PACKAGES[tool]}" in " ".join(problems)
    assert not [p for p in problems if "vagrant" in p or "libvirt" in p], problems


def test_every_host_package_exists_in_the_archive():
    """HOST_PACKAGES is what CI installs: a typo would only show on a fresh machine."""
    run = subprocess.run(["apt-cache", "show", "--no-all-versions", *host.HOST_PACKAGES],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    shown = {line.split(": ", 1)[1] for line in run.stdout.splitlines()
             if line.startswith("Package: ")}
    assert shown == set(host.HOST_PACKAGES)
