"""The libvirt box (kubelab.debian.BOXES["libvirt"]): the image's rootfs on a bootable disk.

The rootfs (kubelab.image) is copied into a partitioned raw disk on a loop device; the
kernel and grub are installed there in a chroot (native speed, not in a slow guest); the
disk becomes a compressed qcow2 in a Vagrant box, added with `vagrant box add`.

Cached by a hash of the image and of the steps that make the disk: the box file is kept under
IMAGE_CACHE/boxes/<hash>/ and the box added to Vagrant carries the hash in its
metadata.json, so an unchanged box is neither rebuilt nor re-added. Every mount lives in a
private mount namespace of one command, and the loop device is detached in a `finally`:
a failure half-way leaves nothing mounted or attached.
"""
import hashlib
import inspect
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from kubelab.image import CHROOT_ENV, chroot_mounts, image_hash, rootfs
from kubelab.errors import LabError
from kubelab.paths import IMAGE_CACHE
from kubelab.progress import phase
from kubelab.system import VAGRANT_ENV, missing_tools, run, virsh

BOXES = IMAGE_CACHE / "boxes"
DISK_GIB = 20          # the VM's root disk (sparse: the box holds only what is used)
BOOT_PACKAGES = ["linux-image-amd64", "grub-pc"]
# eth0, eth1.. in the order the NICs are declared; the console on the serial port.
KERNEL_CMDLINE = "net.ifnames=0 console=tty0 console=ttyS0,115200"
BOX_VAGRANTFILE = """# Defaults of the kubelab box; the lab's generated Vagrantfile sets everything else.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.disk_bus = "virtio"
    lv.nic_model_type = "virtio"
  end
end
"""


class BoxError(LabError):
    pass


def box_hash():
    """Hash of what the box is made from: the image and the steps that turn it into a disk."""
    blob = json.dumps([image_hash(), DISK_GIB, BOOT_PACKAGES, KERNEL_CMDLINE, BOX_VAGRANTFILE,
                       inspect.getsource(_build), inspect.getsource(_install_boot)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# What building and adding the box runs.
TOOLS = ["sfdisk", "losetup", "partx", "mkfs.ext4", "qemu-img", "tar", "vagrant"]


def _check_host():
    """Refuse clearly, before anything is written, when this machine cannot build the box."""
    problems = [] if os.geteuid() == 0 else ["building the box needs root (loop devices, "
                                             "mounts)"]
    problems += missing_tools(TOOLS)
    if problems:
        raise BoxError("cannot build the box:\n" + "\n".join(f"- {p}" for p in problems))


def build_box(name, force=False):
    """Make the libvirt box and add it to Vagrant as `name` (the spec's boxes.libvirt).
    Skips whatever is already done for the current inputs. Returns the box file's path."""
    digest = box_hash()
    entry = BOXES / digest
    box_file = entry / "kubelab.box"
    if added_hash(name) == digest and box_file.exists() and not force:
        print(f"box {name} {digest} is up to date", flush=True)
        return box_file
    _check_host()
    if force or not box_file.exists():
        root = rootfs()
        entry.mkdir(parents=True, exist_ok=True)
        work = entry / f"work-{os.getpid()}"
        work.mkdir()
        try:
            log = entry / "build.log"
            log.write_text("")
            with phase(f"Building the libvirt box {name} {digest} (log: {log})"):
                _build(root, work, log, digest)
                (work / "kubelab.box").replace(box_file)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _remove_other_boxes(digest)
    with phase(f"Adding the box {name} to Vagrant"):
        # From the cache dir: Vagrant leaves a .vagrant/ in the directory it runs in.
        run("vagrant", "box", "add", "--force", "--name", name, str(box_file), cwd=entry,
            env={**os.environ, **VAGRANT_ENV})
        remove_unused_volumes(name)
    return box_file


def _vagrant_name(name):
    """How Vagrant and vagrant-libvirt write a box name in file and volume names."""
    return name.replace("/", "-VAGRANTSLASH-")


def added_hash(name):
    """The kubelab hash of the box `name` added to Vagrant (None if absent or foreign)."""
    home = Path(os.environ.get("VAGRANT_HOME", Path.home() / ".vagrant.d"))
    metadata = home / "boxes" / _vagrant_name(name) / "0" / "libvirt" / "metadata.json"
    try:
        return json.loads(metadata.read_text()).get("kubelab_hash")
    except (OSError, ValueError):
        return None


def _build(root, work, log, digest):
    raw = work / "disk.raw"
    with open(raw, "wb") as disk:
        disk.truncate(DISK_GIB << 30)
    # One bootable partition from 1 MiB: grub's core image goes in the gap before it.
    run("sfdisk", "--quiet", str(raw), log=log, input="label: dos\nstart=2048, type=83, bootable\n")
    loop = run("losetup", "--find", "--show", "--partscan", str(raw)).stdout.strip()
    try:
        part = _partition(loop)
        fs_uuid = str(uuid.uuid4())
        run("mkfs.ext4", "-q", "-L", "root", "-U", fs_uuid, part, log=log)
        with phase(f"copying the rootfs, installing {' '.join(BOOT_PACKAGES)} and grub"):
            _install_boot(root, loop, part, fs_uuid, work / "mnt", log)
    finally:
        run("partx", "-d", loop, check=False)
        run("losetup", "-d", loop)
    with phase("converting to compressed qcow2"):
        run("qemu-img", "convert", "-c", "-O", "qcow2", str(raw), str(work / "box.img"), log=log)
        raw.unlink()
    (work / "metadata.json").write_text(json.dumps(
        {"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GIB,
         "kubelab_hash": digest}) + "\n")
    (work / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    with phase("packing the box"):
        run("tar", "-C", str(work), "-cf", str(work / "kubelab.box"),
            "metadata.json", "Vagrantfile", "box.img", log=log)


def _partition(loop):
    """The first partition's device; without udev it may need `partx -a` to appear."""
    part = f"{loop}p1"
    if not Path(part).exists():
        run("partx", "-a", loop, check=False)
    if not Path(part).exists():
        sysfs = Path("/sys/block") / Path(loop).name / f"{Path(loop).name}p1" / "dev"
        if not sysfs.exists():
            raise BoxError(f"{loop} shows no partition: the kernel did not scan it")
        major, minor = sysfs.read_text().split(":")
        os.mknod(part, 0o660 | 0o060000, os.makedev(int(major), int(minor)))
    return part


def _install_boot(root, loop, part, fs_uuid, mnt, log):
    """One shell in a private mount namespace: mount the partition, copy the rootfs, give the
    chroot a /dev of its own with the loop devices and /dev/disk/by-uuid/<uuid> (without it
    update-grub writes root=/dev/loopXp1 and the disk cannot boot), install kernel and grub."""
    mnt.mkdir()
    chroot_script = f"""
echo 'UUID={fs_uuid} / ext4 errors=remount-ro 0 1' > /etc/fstab
cat > /etc/default/grub.d/kubelab.cfg <<'EOF'
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="{KERNEL_CMDLINE}"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
EOF
echo 'grub-pc grub-pc/install_devices multiselect' | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends {' '.join(BOOT_PACKAGES)}
grub-install --target=i386-pc {loop}
update-grub
grep -q 'root=UUID={fs_uuid}' /boot/grub/grub.cfg
apt-get clean
rm -rf /var/lib/apt/lists/*
: > /etc/resolv.conf
"""
    script = f"""
mount {part} {mnt}
cp -a {root}/. {mnt}/
mkdir -p {mnt}/etc/default/grub.d
{chroot_mounts(mnt, (loop, part))}mkdir -p {mnt}/dev/disk/by-uuid
ln -s ../../{Path(part).name} {mnt}/dev/disk/by-uuid/{fs_uuid}
cp /etc/resolv.conf {mnt}/etc/resolv.conf
chroot {mnt} /bin/sh -ec "$0"
"""
    run("unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec", script,
        chroot_script, log=log, env=CHROOT_ENV)


def _remove_other_boxes(keep):
    for entry in BOXES.iterdir():
        if entry.name != keep and re.fullmatch(r"[0-9a-f]{16}", entry.name):
            shutil.rmtree(entry, ignore_errors=True)


def remove_unused_volumes(name):
    """Remove vagrant-libvirt's copies of the box `name` in libvirt's default pool that no
    VM uses. vagrant-libvirt makes one per box file it sees (named with its timestamp):
    old ones pile up after rebuilds, and the current one is made again on the next `up`."""
    if not shutil.which("virsh"):
        return
    prefix = _vagrant_name(name) + "_vagrant_box_image_"
    in_use = "".join(virsh("dumpxml", d) for d in virsh("list", "--all", "--name").split())
    for volume in virsh("vol-list", "default").split()[::2]:
        if volume.startswith(prefix) and volume not in in_use:
            virsh("vol-delete", "--pool", "default", volume)
