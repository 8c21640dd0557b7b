"""The libvirt box build: cached by its inputs, and a failure half-way leaves nothing
mounted or attached. Needs root, the image's rootfs and Debian's archive."""
import shutil
import subprocess
from pathlib import Path

import pytest

from kubelab import box
from kubelab.system import PACKAGES, CommandError

pytestmark = pytest.mark.vm


def test_failed_build_leaves_nothing_mounted_or_attached(monkeypatch):
    # A kernel package that does not exist: the build fails inside the chroot, after the
    # loop device is attached and the disk mounted.
    monkeypatch.setattr(box, "BOOT_PACKAGES", ["kubelab-no-such-kernel"])
    entry = box.BOXES / box.box_hash()
    try:
        with pytest.raises(CommandError) as err:
            box.build_box("kubelab-test/never-added", force=True)
        assert "Unable to locate package kubelab-no-such-kernel" in str(err.value)
        assert not list(entry.glob("work-*"))
        assert str(entry) not in subprocess.run(["losetup", "--list"], capture_output=True,
                                                text=True, check=True).stdout
        assert str(entry) not in Path("/proc/self/mounts").read_text()
        assert box.added_hash("kubelab-test/never-added") is None
    finally:
        shutil.rmtree(entry, ignore_errors=True)


def test_missing_tools_are_named_before_anything_is_written(monkeypatch, tmp_path):
    monkeypatch.setattr(box, "box_hash", lambda: "0" * 16)     # (it asks dpkg)
    monkeypatch.setattr(box, "BOXES", tmp_path / "boxes")
    monkeypatch.setenv("PATH", str(tmp_path))      # nothing installed
    with pytest.raises(box.BoxError) as err:
        box.build_box("kubelab-test/never-added", force=True)
    for tool in box.TOOLS:
        assert f"'{tool}' not found: apt-get install {PACKAGES[tool]}" in str(err.value)
    assert not (tmp_path / "boxes").exists()


def test_the_box_depends_on_its_inputs(monkeypatch):
    before = box.box_hash()
    monkeypatch.setattr(box, "DISK_GIB", box.DISK_GIB + 1)
    assert box.box_hash() != before
