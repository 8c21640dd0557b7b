"""Which provider a command uses, and `kubelab destroy --provider` of a lab with no record.
Vagrant and libvirt are stubbed: nothing here starts or removes a real VM."""
import subprocess

import pytest

from kubelab import box, cli, nspawn, paths, vagrant
from kubelab.errors import LabError
from kubelab.paths import DEFAULT_SPEC, provider_file
from kubelab.plan import load_plan
from kubelab.providers import PROVIDERS, resolve
from kubelab.spec import PROVIDERS as PROVIDER_NAMES


@pytest.fixture
def plan(tmp_path, monkeypatch):
    """The default spec's plan with a state dir of its own (no lab up)."""
    monkeypatch.setattr(paths, "STATE", tmp_path / "state")
    return load_plan(DEFAULT_SPEC)


def other_than(name):
    return next(p for p in PROVIDER_NAMES if p != name)


def test_every_provider_the_spec_allows_has_an_implementation():
    assert sorted(PROVIDERS) == sorted(PROVIDER_NAMES)
    assert all(PROVIDERS[name].name == name for name in PROVIDERS)


def test_without_a_record_the_request_else_the_specs_default(plan):
    assert resolve(plan).name == plan.default_provider
    requested = other_than(plan.default_provider)
    assert resolve(plan, requested).name == requested


def test_the_labs_record_wins_over_the_specs_default(plan):
    recorded = other_than(plan.default_provider)
    provider_file(plan).write_text(recorded + "\n")
    assert resolve(plan).name == recorded
    assert resolve(plan, recorded).name == recorded


def test_a_request_contradicting_the_record_names_both(plan):
    recorded = "nspawn"
    provider_file(plan).write_text(recorded + "\n")
    with pytest.raises(LabError) as err:
        resolve(plan, "libvirt")
    assert "brought up with nspawn" in str(err.value) and "not libvirt" in str(err.value)


class FakeLibvirt:
    """virsh against a made-up libvirt: running and defined domains, networks, volumes."""

    def __init__(self, domains, networks, volumes):
        self.running, self.domains = set(domains), set(domains)
        self.active, self.networks = set(networks), set(networks)
        self.volumes = set(volumes)

    def __call__(self, *args):
        lists = {("list", "--name"): self.running, ("list", "--all", "--name"): self.domains,
                 ("net-list", "--name"): self.active,
                 ("net-list", "--all", "--name"): self.networks}
        if args in lists:
            return "\n".join(sorted(lists[args])) + "\n"
        if args == ("vol-list", "default"):
            return "".join(f"{v} /var/lib/libvirt/images/{v}\n" for v in sorted(self.volumes))
        if args[0] == "dumpxml":
            return f"<domain><name>{args[1]}</name></domain>"
        removed = {"destroy": self.running, "undefine": self.domains,
                   "net-destroy": self.active, "net-undefine": self.networks,
                   "vol-delete": self.volumes}[args[0]]
        removed.discard(args[-1])
        return ""


class FakeVagrant:
    destroyed_with = []
    fails = False

    def __init__(self, plan, provider):
        self.provider = provider

    def destroy(self):
        FakeVagrant.destroyed_with.append(self.provider)
        if FakeVagrant.fails:
            raise subprocess.CalledProcessError(1, ["vagrant", "destroy"])


@pytest.mark.parametrize("vagrant_fails", [False, True])
def test_destroy_with_provider_libvirt_and_no_record_cleans_libvirts_leftovers(
        plan, monkeypatch, capsys, vagrant_fails):
    """A lab whose record is gone (a crash, another state dir): Vagrant runs as libvirt,
    and the lab's domains, networks and volumes left in libvirt are removed, with the
    box copies no VM uses, also when `vagrant destroy` fails. Another lab's objects stay."""
    host = plan.hosts[0]
    ours = vagrant.vm_name(plan, host)
    other = "otherlab-" + host.name
    stale_box = plan.boxes["libvirt"].replace("/", "-VAGRANTSLASH-") + \
        "_vagrant_box_image_0_1700000000_box.img"
    libvirt = FakeLibvirt(domains={ours, other},
                          networks={vagrant.network_name(plan, "mgmt"),
                                    vagrant.network_name(plan, plan.networks[0].name),
                                    "otherlab-mgmt"},
                          volumes={f"{ours}.img", f"{ours}-vdb.qcow2", f"{other}.img",
                                   stale_box})
    monkeypatch.setattr(vagrant, "virsh", libvirt)
    monkeypatch.setattr(box, "virsh", libvirt)
    monkeypatch.setattr(vagrant, "_vagrant", FakeVagrant)
    monkeypatch.setattr(FakeVagrant, "fails", vagrant_fails)
    FakeVagrant.destroyed_with = []
    assert not provider_file(plan).exists()

    code = cli.main(["--spec", str(DEFAULT_SPEC), "destroy", "--provider", "libvirt", "-y"])

    err = capsys.readouterr().err
    assert code == 0, err
    assert ("`vagrant destroy` failed" in err) == vagrant_fails
    assert FakeVagrant.destroyed_with == ["libvirt"]
    assert vagrant.libvirt_leftovers(plan) == []
    assert libvirt.domains == {other} and libvirt.running == {other}
    assert libvirt.networks == {"otherlab-mgmt"}
    assert libvirt.volumes == {f"{other}.img"}


def test_destroy_with_a_provider_contradicting_the_record_touches_nothing(
        plan, monkeypatch, capsys):
    provider_file(plan).write_text("nspawn\n")
    monkeypatch.setattr(vagrant, "_vagrant", FakeVagrant)
    FakeVagrant.destroyed_with = []
    code = cli.main(["--spec", str(DEFAULT_SPEC), "destroy", "--provider", "libvirt", "-y"])
    err = capsys.readouterr().err
    assert code == 1
    assert "nspawn" in err and "libvirt" in err
    assert FakeVagrant.destroyed_with == []
    assert provider_file(plan).read_text() == "nspawn\n"


def test_destroy_with_no_record_and_no_provider_asks_for_one(plan, capsys):
    code = cli.main(["--spec", str(DEFAULT_SPEC), "destroy", "-y"])
    assert code == 1
    assert "kubelab destroy --provider P" in capsys.readouterr().err


def test_a_failing_vagrant_destroy_of_virtualbox_vms_is_an_error(plan, monkeypatch, capsys):
    provider_file(plan).write_text("virtualbox\n")
    monkeypatch.setattr(vagrant, "_vagrant", FakeVagrant)
    monkeypatch.setattr(FakeVagrant, "fails", True)
    code = cli.main(["--spec", str(DEFAULT_SPEC), "destroy", "-y"])
    assert code == 1
    assert "`vagrant destroy` failed (exit 1" in capsys.readouterr().err
    assert provider_file(plan).exists()     # the lab is still recorded: destroy it again


def test_status_names_container_labs_whose_state_dir_is_gone(plan, tmp_path, monkeypatch,
                                                             capsys):
    owners = tmp_path / "owners"
    owners.mkdir()
    kept = tmp_path / "kept"
    kept.mkdir()
    (owners / "alive").write_text(f"{kept}\n")
    (owners / "orphan").write_text(f"{tmp_path / 'gone' / 'orphan'}\n")
    monkeypatch.setattr(nspawn, "OWNERS", owners)
    assert nspawn.stale_labs() == {"orphan": tmp_path / "gone" / "orphan"}
    assert cli.main(["--spec", str(DEFAULT_SPEC), "status"]) == 0
    out = capsys.readouterr().out
    assert "stale container lab orphan" in out and "alive" not in out
