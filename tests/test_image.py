"""The Debian image: where its mirror comes from, what its hash covers, and (lab) what the
built root filesystem holds."""
import fcntl
import subprocess

import pytest

import tasks
from kubelab import image
from kubelab.system import CommandError
from tasks import gateway


def write_apt(root, sources=None, sources_list=None):
    (root / "sources.list.d").mkdir(parents=True)
    if sources is not None:
        (root / "sources.list.d" / "debian.sources").write_text(sources)
    if sources_list is not None:
        (root / "sources.list").write_text(sources_list)


DEB822 = """Types: deb
# a comment
URIs: http://archive.example/debian
Suites: {suite} {suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.example/debian-security
Suites: {suite}-security
Components: main

Types: deb
URIs: http://third-party.example/apt
Suites: nodistro
Components: main
""".format(suite=image.SUITE)


@pytest.fixture
def apt_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "APT_SOURCES", tmp_path / "apt")
    monkeypatch.setattr(image, "OS_RELEASE", tmp_path / "os-release")
    (tmp_path / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
                                         'VERSION_CODENAME=bookworm\n')
    monkeypatch.delenv("KUBELAB_DEBIAN_MIRROR", raising=False)
    return tmp_path / "apt"


def test_mirror_comes_from_deb822_sources(apt_dir):
    write_apt(apt_dir, sources=DEB822)
    assert image.mirror() == "http://archive.example/debian"
    text = image.image_sources()
    assert "http://archive.example/debian-security" in text
    assert "third-party" not in text      # only the suite's own sources go into the image


def test_a_machine_of_an_older_release_lends_its_archive(apt_dir):
    """A Debian 12 lab machine has sources for bookworm only: the image takes the same
    archive, security archive and signing key, for its own suite."""
    write_apt(apt_dir, sources=DEB822.replace(image.SUITE, "bookworm"))
    assert image.mirror() == "http://archive.example/debian"
    stanzas = image.image_sources().split("\n\n")
    assert len(stanzas) == 2 and "third-party" not in image.image_sources()
    assert f"Suites: {image.SUITE} {image.SUITE}-updates\n" in stanzas[0]
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in stanzas[0]
    assert "URIs: http://archive.example/debian-security\n" in stanzas[1]
    assert f"Suites: {image.SUITE}-security\n" in stanzas[1]
    assert "bookworm" not in image.image_sources()


def test_mirror_comes_from_one_line_sources_list(apt_dir):
    write_apt(apt_dir, sources_list=f"deb [arch=amd64] http://archive.example/debian/ "
                                    f"{image.SUITE} main\n")
    assert image.mirror() == "http://archive.example/debian"


def test_mirror_override_from_the_environment(apt_dir, monkeypatch):
    write_apt(apt_dir, sources=DEB822)
    monkeypatch.setenv("KUBELAB_DEBIAN_MIRROR", "http://override.example/debian/")
    assert image.mirror() == "http://override.example/debian"
    text = image.image_sources()
    assert "URIs: http://override.example/debian\n" in text
    assert "http://archive.example/debian\n" not in text


def test_no_mirror_is_a_clear_error(apt_dir):
    write_apt(apt_dir, sources=DEB822.replace(image.SUITE, "other"))
    with pytest.raises(image.ImageError, match="KUBELAB_DEBIAN_MIRROR"):
        image.mirror()


def test_hash_follows_the_package_list(monkeypatch):
    before = image.image_hash()
    assert image.image_hash() == before
    monkeypatch.setattr(gateway, "PACKAGES", gateway.PACKAGES + ["tcpdump"])
    assert image.image_hash() != before


def test_hash_follows_the_files_copied_in(monkeypatch, tmp_path):
    before = image.image_hash()
    files = tmp_path / "files"
    files.mkdir()
    for f in image.FILES.iterdir():
        (files / f.name).write_text(f.read_text())
    monkeypatch.setattr(image, "FILES", files)
    assert image.image_hash() == before
    (files / "interfaces").write_text("# changed\n")
    assert image.image_hash() != before


# --- the built root filesystem ---------------------------------------------------------------

def enabled(root, unit):
    run = subprocess.run(["systemctl", f"--root={root}", "is-enabled", unit],
                         capture_output=True, text=True)
    return run.stdout.strip()


def test_a_new_image_removes_earlier_ones_not_being_built(monkeypatch, tmp_path):
    monkeypatch.setattr(image, "IMAGE_CACHE", tmp_path)
    keep, old, building = "a" * 16, "b" * 16, "c" * 16
    for digest in (keep, old, building):
        (tmp_path / digest / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "boxes").mkdir()
    with open(tmp_path / building / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)    # another command is building this one
        image._remove_other_images(keep=keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([keep, building, "boxes"])


def test_missing_tools_are_named_before_anything_is_written(monkeypatch, tmp_path):
    monkeypatch.setattr(image, "IMAGE_CACHE", tmp_path / "cache")
    monkeypatch.setattr(image, "image_hash", lambda: "0" * 16)     # (it asks dpkg)
    monkeypatch.setenv("PATH", str(tmp_path))      # nothing installed
    with pytest.raises(image.ImageError) as err:
        image.build()
    assert "'debootstrap' not found: apt-get install debootstrap" in str(err.value)
    assert not (tmp_path / "cache").exists()


@pytest.mark.lab
def test_rootfs_holds_what_every_host_needs():
    root = image.rootfs()
    assert image.rootfs() == root                 # cached: the second call does not rebuild
    installed = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f",
                                "${Package} ${Status}\n"], capture_output=True, text=True,
                               check=True).stdout
    ok = {line.split()[0] for line in installed.splitlines() if line.endswith(" installed")}
    assert set(tasks.image_packages()) <= ok
    assert (root / "etc/machine-id").read_text() == ""
    assert not list((root / "etc/ssh").glob("ssh_host_*"))
    assert enabled(root, "ssh-hostkeys.service") == "enabled"
    assert enabled(root, "ssh.service") == "enabled"
    # sshd-keygen would make an RSA key too at first boot (20-40 s under emulation).
    for unit in ("dnsmasq", "haproxy", "corosync", "pacemaker", "chrony", "glusterd",
                 "sshd-keygen"):
        assert enabled(root, f"{unit}.service") != "enabled", unit
    versions = image.stage_versions(root)
    assert "haproxy " in versions["loadbalancers"] and "fuse3 " in versions["storage"]
    keys = (root / "home/vagrant/.ssh/authorized_keys").read_text()
    assert keys.strip() == image.vagrant_public_key().strip()
    assert "NOPASSWD" in (root / "etc/sudoers.d/vagrant").read_text()
    assert (root / "var/lib/systemd/linger/vagrant").exists()    # no user manager per login
    shadow = {line.split(":")[0]: line.split(":")[1]
              for line in (root / "etc/shadow").read_text().splitlines()}
    assert shadow["vagrant"] == "*" and shadow["root"] in ("*", "!")
    assert "iface eth0 inet dhcp" in (root / "etc/network/interfaces").read_text()
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert (root / "etc/resolv.conf").read_text() == ""
    assert image.image_hash() in str(root)


@pytest.mark.lab
def test_a_failed_build_leaves_nothing_mounted_or_half_written(monkeypatch, tmp_path):
    """A package the archive does not have fails the build after debootstrap, with /proc,
    /sys and /dev mounted in the chroot: nothing stays mounted, no rootfs is left."""
    monkeypatch.setattr(image, "IMAGE_CACHE", tmp_path)
    monkeypatch.setattr(gateway, "PACKAGES", ["kubelab-no-such-package"])
    with pytest.raises(CommandError, match="kubelab-no-such-package"):
        image.build()
    entry = tmp_path / image.image_hash()
    assert not (entry / "rootfs").exists()
    assert not list(entry.glob("rootfs.tmp-*"))
    with open("/proc/self/mounts") as mounts:
        assert not [line for line in mounts if str(tmp_path) in line]
