"""The GlusterFS trusted pool on the storage hosts and its volumes (storage.volumes in the
spec): bricks on each host's data disk (VMs) or in a directory (containers), glusterd, the
peers probed from the first storage host, each volume created, started and set once.

A data disk is found by the size the plan gives it and formatted only when it carries no
signature at all; a disk that carries anything not made by kubelab stops the deploy.
"""
import json
import uuid
import xml.etree.ElementTree as ET

from pyinfra import host, state
from pyinfra.api import FactBase, OperationError, operation
from pyinfra.operations import files, server

from tasks.helpers import chosen, in_container, retry_for, unit_state

NAME = "Storage"
GROUPS = ("storage",)
PACKAGES = ["glusterfs-server", "glusterfs-client", "xfsprogs", "thin-provisioning-tools",
            "fuse3"]
# Where the data disk is mounted; each volume's brick is a directory under it.
BRICKS = "/srv/gluster"
# Every filesystem kubelab makes on a data disk carries this label (XFS: 12 characters).
DISK_LABEL = "kubelab-data"
# XFS with 512-byte inodes: Gluster's extended attributes fit in the inode.
MKFS = f"mkfs.xfs -q -i size=512 -L {DISK_LABEL}"
PEER_WAIT_SECONDS = 60


# --- what the spec says -------------------------------------------------------------------

def options(plan):
    """The options every volume gets. quorum-type auto: a replica set takes writes only while
    most of its bricks are up (no split brain); ping-timeout: how long a vanished brick
    blocks writes (chosen by `kubelab drill storage`)."""
    return {"cluster.quorum-type": "auto",
            "network.ping-timeout": str(plan.storage.ping_timeout)}


def brick_path(volume_name):
    return f"{BRICKS}/{volume_name}"


def bricks(plan, volume_name):
    """The volume's bricks, one per storage host in plan order (consecutive bricks form a
    replica set), named as the gateway's DNS names the hosts."""
    return [f"{h.fqdn}:{brick_path(volume_name)}" for h in plan.group("storage")]


def disk_uuid(plan, me):
    """The UUID the deploy gives the filesystem on `me`'s data disk: fixed by lab and host,
    so /etc/fstab is known before the disk is formatted."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"data.{me.fqdn}.{plan.name}"))


def files_for(plan, me, secrets):
    return {}


# --- the data disk ------------------------------------------------------------------------

class BlockDevices(FactBase):
    """Every block device (lsblk's tree, sizes in bytes)."""

    default = list

    def command(self):
        return "lsblk -J -b -o NAME,PATH,TYPE,SIZE,FSTYPE,PTTYPE,LABEL,UUID,MOUNTPOINT"

    def process(self, output):
        return json.loads("".join(output) or "{}").get("blockdevices", [])


class Signatures(FactBase):
    """What libblkid finds on a device, probing the device itself (no cache): {"TYPE": "xfs",
    "UUID": ..., "LABEL": ..., "PTTYPE": "gpt", ...}; {} when it carries nothing."""

    default = dict

    def command(self, path):
        return f"blkid -p -o export {path} || true"

    def process(self, output):
        return dict(line.split("=", 1) for line in output if "=" in line)


def _tree(device):
    yield device
    for child in device.get("children") or []:
        yield from _tree(child)


def find_data_disk(devices, size_bytes, host_name):
    """The one whole disk of exactly `size_bytes` that holds no mounted filesystem other than
    the bricks' (the root disk holds /). Raises OperationError naming what was found."""
    candidates = [d for d in devices if d.get("type") == "disk" and int(d["size"]) == size_bytes
                  and all(p.get("mountpoint") in (None, BRICKS) for p in _tree(d))]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(f"{d['path']} {int(d['size']) / 2**30:g} GiB" for d in devices
                      if d.get("type") == "disk") or "none"
    if not candidates:
        raise OperationError(
            f"{host_name}: no unused disk of {size_bytes / 2**30:g} GiB (the plan's data_disk) "
            f"among the disks {found}: give the host its data disk (`vagrant up` makes it from "
            "the Vagrantfile) or set hosts.storage.data_disk to its size")
    raise OperationError(
        f"{host_name}: {len(candidates)} unused disks of {size_bytes / 2**30:g} GiB ({found}): "
        "the data disk is found by size; give it a size no other disk has "
        "(hosts.storage.data_disk)")


def disk_state(signatures, disk_uuid_):
    """'empty', 'ours' (the XFS kubelab made, label and UUID), or what else is on the disk."""
    if not signatures:
        return "empty"
    if (signatures.get("TYPE"), signatures.get("LABEL"), signatures.get("UUID")) == \
            ("xfs", DISK_LABEL, disk_uuid_):
        return "ours"
    what = signatures.get("TYPE") or (f"a {signatures['PTTYPE']} partition table"
                                      if "PTTYPE" in signatures else "a signature")
    details = ", ".join(f"{k}={v}" for k, v in sorted(signatures.items())
                        if k in ("LABEL", "UUID", "PTTYPE", "PTUUID"))
    return f"{what}{f' ({details})' if details else ''}"


@operation()
def data_disk_formatted(size_bytes, fs_uuid):
    """Format the data disk (found by its size) with XFS when it carries no signature at all;
    leave the XFS made by kubelab as it is; stop on anything else, naming it."""
    disk = find_data_disk(host.get_fact(BlockDevices), size_bytes, host.name)
    if disk.get("children"):
        raise OperationError(
            f"{host.name}: data disk {disk['path']} has partitions "
            f"({', '.join(c['path'] for c in disk['children'])}); kubelab formats only an empty "
            "disk. If nothing on it is needed: wipefs -a on each partition and the disk, then "
            "deploy again")
    found = disk_state(host.get_fact(Signatures, path=disk["path"]), fs_uuid)
    if found == "ours":
        host.noop(f"{disk['path']} carries the bricks' XFS")
        return
    if found != "empty":
        raise OperationError(
            f"{host.name}: data disk {disk['path']} ({size_bytes / 2**30:g} GiB) carries "
            f"{found}, not made by kubelab; it formats only an empty disk. If nothing on it is "
            f"needed: wipefs -a {disk['path']}, then deploy again")
    yield f"{MKFS} -m uuid={fs_uuid} {disk['path']}"


def bricks_disk(plan, me):
    fs_uuid = disk_uuid(plan, me)
    data_disk_formatted(name=f"Data disk ({me.data_disk} GiB): XFS for the bricks",
                        size_bytes=me.data_disk << 30, fs_uuid=fs_uuid)
    files.directory(name=f"Directory {BRICKS}", path=BRICKS)
    # nofail: a host whose disk fails still boots; its bricks (directories on the disk) are
    # then missing, so glusterd reports them offline instead of filling the root filesystem.
    files.line(name=f"{BRICKS} in /etc/fstab (by UUID)", path="/etc/fstab",
               line=f"^UUID=[^ ]* {BRICKS} ",
               replace=f"UUID={fs_uuid} {BRICKS} xfs defaults,noatime,nofail 0 2")
    server.mount(name=f"Mount {BRICKS}", path=BRICKS)


# --- the pool and its volumes -------------------------------------------------------------

def parse_xml(text):
    """The root of the gluster CLI's --xml answer, or None when there is none."""
    text = text.strip()
    return ET.fromstring(text) if text.startswith("<") else None


def heal_pending(text):
    """The entries `gluster volume heal VOLUME info` lists as waiting for heal, or None when a
    brick is not connected (its count is unknown)."""
    statuses = [line.split(":", 1)[1].strip() for line in text.splitlines()
                if line.startswith("Status:")]
    counts = [line.split(":", 1)[1].strip() for line in text.splitlines()
              if line.startswith("Number of entries:")]
    if not statuses or any(s != "Connected" for s in statuses) or \
            not all(c.isdigit() for c in counts):
        return None
    return sum(int(c) for c in counts)


class Peers(FactBase):
    """{name: connected} of the host's pool peers, every name glusterd knows each by."""

    default = dict

    def command(self):
        return "gluster peer status --xml 2>/dev/null || true"

    def process(self, output):
        root = parse_xml("\n".join(output))
        peers = {}
        for peer in [] if root is None else root.iter("peer"):
            connected = peer.findtext("connected") == "1"
            for name in {peer.findtext("hostname"), *(n.text for n in peer.iter("hostname"))}:
                peers[name] = connected
        return peers


class Volumes(FactBase):
    """{volume: {"started": bool, "replica": int, "bricks": [...], "options": {...}}}."""

    default = dict

    def command(self):
        return "gluster volume info all --xml 2>/dev/null || true"

    def process(self, output):
        root = parse_xml("\n".join(output))
        found = {}
        for vol in [] if root is None else root.iter("volume"):
            found[vol.findtext("name")] = {
                "started": vol.findtext("statusStr") == "Started",
                "replica": int(vol.findtext("replicaCount") or 0),
                "bricks": [b.findtext("name") for b in vol.iter("brick")],
                "options": {o.findtext("name"): o.findtext("value") for o in vol.iter("option")}}
        return found


@operation()
def peers_probed(names):
    """Probe every host of `names` that is not in the pool yet (by name), then wait until
    every one is connected."""
    peers = host.get_fact(Peers)
    if all(peers.get(name) for name in names):
        host.noop(f"{len(names)} peers connected")
        return
    for name in names:
        if name not in peers:
            # Its glusterd may still be starting: retry for a while.
            yield retry_for(PEER_WAIT_SECONDS, f"gluster peer probe {name}",
                            f"peer probe {name} failed for {PEER_WAIT_SECONDS} s: is glusterd "
                            "running there, and does the name resolve?")
    yield retry_for(PEER_WAIT_SECONDS,
                    f"[ $(gluster pool list | grep -c Connected) -ge {len(names) + 1} ]",
                    f"not every peer connected within {PEER_WAIT_SECONDS} s",
                    show="gluster pool list >&2")


@operation()
def volume_started(volume, replica, brick_list, force):
    """Create the volume when it does not exist, start it when it is stopped. An existing
    volume with other bricks or another replica count is never reshaped: the deploy stops."""
    found = host.get_fact(Volumes).get(volume)
    if found is None:
        yield (f"gluster --mode=script volume create {volume} replica {replica} "
               f"{' '.join(brick_list)}{' force' if force else ''}")
    elif (found["replica"], found["bricks"]) != (replica, brick_list):
        raise OperationError(
            f"volume {volume} exists with replica {found['replica']} and bricks "
            f"{' '.join(found['bricks'])}; the spec asks for replica {replica} on "
            f"{' '.join(brick_list)}. kubelab does not reshape a volume: change the spec back, "
            "or move its data and delete the volume (gluster volume stop/delete)")
    if found is None or not found["started"]:
        yield f"gluster --mode=script volume start {volume}"
    else:
        host.noop(f"volume {volume} started")


@operation()
def volume_options(volume, wanted):
    """Set each option of `wanted` whose value differs on the volume."""
    current = host.get_fact(Volumes).get(volume, {}).get("options", {})
    changes = {k: v for k, v in wanted.items() if current.get(k) != v}
    for key, value in changes.items():
        yield f"gluster --mode=script volume set {volume} {key} {value}"
    if not changes:
        host.noop(f"volume {volume}: options as the spec says")


@operation()
def pool_waits():
    host.noop("not every storage host is in this run: the pool and its volumes are made by "
              "a run with all of them")
    yield from ()


def whole_pool_in_run(plan):
    """Whether every storage host is in this run: a volume has a brick on each."""
    in_run = {h.data.get("fqdn") for h in state.inventory if state.is_host_in_limit(h)}
    return {h.fqdn for h in plan.group("storage")} <= in_run


def deploy(plan, me, secrets):
    if me.data_disk and not in_container():
        bricks_disk(plan, me)
    for volume in plan.storage.volumes:
        files.directory(name=f"Brick directory of {volume}", path=brick_path(volume))
    unit_state(name="Run glusterd now and at boot", service="glusterd", running=True,
               enabled=True)
    if me != chosen(plan, "storage"):
        return
    if not whole_pool_in_run(plan):
        pool_waits(name="Pool: waits for a run with every storage host")
        return
    others = [h.fqdn for h in plan.group("storage") if h != me]
    peers_probed(name="Pool: every storage host probed and connected", names=others)
    # Bricks on the root filesystem (containers, or no data disk) need `force`.
    force = in_container() or not me.data_disk
    for volume, replica in plan.storage.volumes.items():
        volume_started(name=f"Volume {volume}: created and started", volume=volume,
                       replica=replica, brick_list=bricks(plan, volume), force=force)
        volume_options(name=f"Volume {volume}: options", volume=volume, wanted=options(plan))
