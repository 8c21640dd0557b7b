"""The Vagrantfile: rendered from the plan, committed for the default spec, and accepted by
Debian's vagrant for both providers. Every expected value comes from the plan."""
import os
import re
import subprocess

import pytest

from kubelab.paths import DEFAULT_SPEC, REPO, TEMPLATES
from kubelab.plan import load_plan
from kubelab.vagrant import TOP_LEVEL, network_name, vagrantfile, write_vagrantfile

SPECS = [DEFAULT_SPEC, *sorted((REPO / "examples").glob("*.yaml"))]
HARNESS = REPO / "tests" / "virtualbox_usable.rb"


def test_committed_vagrantfile_is_the_default_specs_rendering():
    assert TOP_LEVEL.read_text() == vagrantfile(load_plan(DEFAULT_SPEC)), (
        "Vagrantfile drifted from kubelab.yaml; re-render it with "
        "kubelab.vagrant.write_vagrantfile(load_plan('kubelab.yaml'), 'Vagrantfile')")


def test_template_holds_no_address_name_or_version():
    text = (TEMPLATES / "vagrant" / "Vagrantfile.j2").read_text()
    plan = load_plan(DEFAULT_SPEC)
    assert not re.search(r"\d+\.\d+\.\d+", text)
    for literal in [*plan.boxes.values(), f'"{plan.name}-', *(f'"{h.name}"' for h in plan.hosts)]:
        assert literal not in text


def _blocks(text):
    """{host name: the text of its config.vm.define block}."""
    parts = re.split(r"^  config\.vm\.define '([^']+)' do \|m\|$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_every_host_gets_its_planned_machine(spec):
    plan = load_plan(spec)
    text = vagrantfile(plan)
    blocks = _blocks(text)
    assert list(blocks) == [h.name for h in plan.hosts]
    for host in plan.hosts:
        block = blocks[host.name]
        assert block.count(f"cpus = {host.cpus}\n") == 2
        assert block.count(f"memory = {host.memory}\n") == 2
        assert f"management_network_mac = '{host.mgmt.mac}'" in block
        assert f"base_mac = '{host.mgmt.mac.replace(':', '')}'" in block
        # Internal NICs in plan order, each with its MAC, network and the host's address kept
        # off the planned ones.
        nics = re.findall(r"ip: '([^']+)', netmask: '([^']+)',\s+mac: '(\w+)', auto_config: false,"
                          r"\s+virtualbox__intnet: '([^']+)',\s+libvirt__network_name: '([^']+)',"
                          r".*?libvirt__host_ip: '([^']+)'", block, flags=re.S)
        expected = []
        for nic in host.nics:
            net = plan.network(nic.network)
            name = network_name(plan, net.name)
            expected.append((str(nic.address), str(net.netmask), nic.mac.replace(":", ""),
                             name, name, str(net.host_ip)))
        assert nics == expected
        disks = re.findall(r"size: '(\d+)GB?'", block)
        assert disks == ([str(host.data_disk)] * 2 if host.data_disk else [])
    for net in plan.networks:
        planned = {str(n.address) for h in plan.hosts for n in h.nics if n.network == net.name}
        assert str(net.host_ip) not in planned
    assert f"management_network_address = '{plan.management}'" in text
    assert f"override.vm.box = '{plan.boxes['libvirt']}'" in text
    assert f"override.vm.box = '{plan.boxes['virtualbox']}'" in text
    assert 'synced_folder ".", "/vagrant", disabled: true' in text
    assert "hostname" not in text


def test_render_of_some_hosts_only():
    plan = load_plan(DEFAULT_SPEC)
    names = [plan.gateway.name, plan.group("masters")[0].name]
    assert list(_blocks(vagrantfile(plan, names))) == names


def _validate(directory, provider, vagrantfile_name="Vagrantfile"):
    env = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DEFAULT_PROVIDER=provider,
               VAGRANT_EXPERIMENTAL="disks", VAGRANT_VAGRANTFILE=vagrantfile_name)
    return subprocess.run(["vagrant", "validate"], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=120)


def _validate_virtualbox(directory):
    """VirtualBox is not installed on CI's machines: load a harness that makes its provider
    usable before the Vagrantfile, so Vagrant validates its settings all the same."""
    (directory / "Vagrantfile.virtualbox").write_text(
        f'load "{HARNESS}"\nload File.join(__dir__, "Vagrantfile")\n')
    return _validate(directory, "virtualbox", "Vagrantfile.virtualbox")


VALIDATE = {"libvirt": lambda d: _validate(d, "libvirt"), "virtualbox": _validate_virtualbox}


@pytest.mark.parametrize("provider", sorted(VALIDATE))
def test_vagrant_validate_accepts_the_vagrantfile(tmp_path, provider):
    write_vagrantfile(load_plan(DEFAULT_SPEC), tmp_path / "Vagrantfile")
    result = VALIDATE[provider](tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


@pytest.mark.parametrize("provider", sorted(VALIDATE))
def test_vagrant_validate_rejects_a_wrong_provider_setting(tmp_path, provider):
    """The check above can fail: a misspelt provider setting is caught for each provider."""
    text = vagrantfile(load_plan(DEFAULT_SPEC))
    short = {"libvirt": "lv", "virtualbox": "vb"}[provider]
    (tmp_path / "Vagrantfile").write_text(text.replace(f"{short}.cpus =", f"{short}.cpuz =", 1))
    result = VALIDATE[provider](tmp_path)
    assert result.returncode != 0
    assert "cpuz" in result.stdout + result.stderr
