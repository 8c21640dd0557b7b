"""The storage stages without hosts: the spec's storage section and its validation, how the
data disk is found and when it is (never) formatted, and the commands the deploy runs on
@fake hosts: the pool and its volumes made once, from the first storage host only."""
import pytest
from pyinfra.api import OperationError

from kubelab.plan import load_plan
from kubelab.spec import SpecError
from tasks import storage, storage_clients
from tests.test_deploy_commands import (SMALL, block_devices, commands, fake_deploy, fake_run,
                                        fresh_host, host_files)
from tests.test_spec import write_spec

GIB = 1 << 30


def problems(tmp_path, overrides):
    with pytest.raises(SpecError) as err:
        load_plan(write_spec(tmp_path, overrides))
    return {p.path: p.message for p in err.value.problems}


# --- the spec -------------------------------------------------------------------------------

def test_a_replica_count_that_does_not_divide_the_hosts_is_refused(tmp_path):
    found = problems(tmp_path, {"hosts": {"storage": {"count": 4}}})
    assert list(found) == ["storage.volumes.kube.replica"]
    assert "must divide the number of storage hosts (4)" in found["storage.volumes.kube.replica"]


def test_six_storage_hosts_make_two_replica_sets_in_host_order(tmp_path):
    plan = load_plan(write_spec(tmp_path, {"hosts": {"storage": {"count": 6}}}))
    assert storage.bricks(plan, "kube") == [f"glus{i:02d}.{plan.domain}:/srv/gluster/kube"
                                            for i in range(1, 7)]


def test_fewer_than_three_storage_hosts_is_refused_once(tmp_path):
    assert list(problems(tmp_path, {"hosts": {"storage": {"count": 2}}})) == \
        ["hosts.storage.count"]


@pytest.mark.parametrize("path", ["mnt/gluster", "/", "/mnt/my gluster", "/mnt/x'y"])
def test_a_mount_path_that_is_not_absolute_is_refused(tmp_path, path):
    """The Kubernetes hosts mount the volume where the StorageClass keeps its volumes."""
    found = problems(tmp_path, {"kubernetes": {"shared_volume_path": path}})
    assert list(found) == ["kubernetes.shared_volume_path"]
    assert "absolute path" in found["kubernetes.shared_volume_path"]


def test_the_volume_for_kubernetes_must_be_a_volume(tmp_path):
    found = problems(tmp_path, {"storage": {"kubernetes_volume": "kub"}})
    assert list(found) == ["storage.kubernetes_volume"] and "kube" in found[
        "storage.kubernetes_volume"]


@pytest.mark.parametrize("volume, path", [
    ({"9lives": {"replica": 3}}, "storage.volumes"),
    ({"one": {"replica": 1}}, "storage.volumes.one.replica")])
def test_bad_volume_names_and_replicas(tmp_path, volume, path):
    assert list(problems(tmp_path, {"storage": {"volumes": {"kube": {"replica": 3}, **volume}}})) \
        == [path]


# --- the data disk --------------------------------------------------------------------------

ROOT = {"name": "vda", "path": "/dev/vda", "type": "disk", "size": 20 * GIB,
        "children": [{"name": "vda1", "path": "/dev/vda1", "type": "part", "size": 20 * GIB,
                      "mountpoint": "/"}]}


def disk(path, gib, **more):
    return {"name": path[5:], "path": path, "type": "disk", "size": gib * GIB, **more}


def test_the_data_disk_is_found_by_its_planned_size_never_the_root_disk():
    devices = [ROOT, disk("/dev/vdb", 50), disk("/dev/vdc", 20), {**disk("/dev/sr0", 20),
                                                                   "type": "rom"}]
    assert storage.find_data_disk(devices, 20 * GIB, "glus01")["path"] == "/dev/vdc"
    # Mounted at the bricks' mount point: still the data disk (a second run).
    mounted = disk("/dev/vdc", 20, mountpoint=storage.BRICKS)
    assert storage.find_data_disk([ROOT, mounted], 20 * GIB, "glus01")["path"] == "/dev/vdc"


@pytest.mark.parametrize("devices, message", [
    ([ROOT], "no unused disk of 20 GiB"),
    ([ROOT, disk("/dev/vdb", 20), disk("/dev/vdc", 20)], "2 unused disks of 20 GiB"),
    ([ROOT, disk("/dev/vdb", 20, mountpoint="/var")], "no unused disk of 20 GiB")])
def test_no_guess_when_the_size_does_not_name_one_disk(devices, message):
    with pytest.raises(OperationError, match=message):
        storage.find_data_disk(devices, 20 * GIB, "glus01")


def test_what_is_on_a_disk():
    ours = "8a0c4b6e-0000-5000-8000-000000000001"
    assert storage.disk_state({}, ours) == "empty"
    assert storage.disk_state({"TYPE": "xfs", "LABEL": storage.DISK_LABEL, "UUID": ours},
                              ours) == "ours"
    # Another lab's disk (our label, another UUID) is not ours.
    assert storage.disk_state({"TYPE": "xfs", "LABEL": storage.DISK_LABEL, "UUID": "x"},
                              ours).startswith("xfs")
    assert storage.disk_state({"TYPE": "ext4", "UUID": "1234"}, ours) == "ext4 (UUID=1234)"
    assert storage.disk_state({"PTTYPE": "gpt", "PTUUID": "ab"}, ours) == \
        "a gpt partition table (PTTYPE=gpt, PTUUID=ab)"


def test_heal_info_counts_pending_entries_and_knows_a_missing_brick():
    healthy = "Brick a:/b\nStatus: Connected\nNumber of entries: 0\n\n" * 3
    assert storage.heal_pending(healthy) == 0
    assert storage.heal_pending(healthy.replace("entries: 0", "entries: 4", 1)) == 4
    down = healthy.replace("Status: Connected\nNumber of entries: 0",
                           "Status: Transport endpoint is not connected\n"
                           "Number of entries: -", 1)
    assert storage.heal_pending(down) is None
    assert storage.heal_pending("") is None


# --- the deploy on @fake hosts ----------------------------------------------------------------

def peer_xml(names):
    peers = "".join(f"<peer><hostname>{n}</hostname><hostnames><hostname>{n}</hostname>"
                    "</hostnames><connected>1</connected></peer>" for n in names)
    return f"<cliOutput><peerStatus>{peers}</peerStatus></cliOutput>"


def volume_xml(plan, options):
    bricks = "".join(f"<brick>{b}<name>{b}</name></brick>" for b in storage.bricks(plan, "kube"))
    opts = "".join(f"<option><name>{k}</name><value>{v}</value></option>"
                   for k, v in options.items())
    return (f"<cliOutput><volInfo><volumes><volume><name>kube</name><statusStr>Started"
            f"</statusStr><replicaCount>3</replicaCount><bricks>{bricks}</bricks><options>"
            f"{opts}</options></volume><count>1</count></volumes></volInfo></cliOutput>")


def signatures(text):
    return {"blkid -p": text}


def storage_commands(events, plan):
    return {h.name: [c for c in commands(events, h.name)
                     if c.startswith(("gluster --mode=script", "mkfs")) or "peer probe" in c]
            for h in plan.group("storage")}


def test_a_fresh_pool_is_made_from_the_first_storage_host_only(tmp_path):
    plan = load_plan(SMALL)
    events, _ = fake_deploy(tmp_path, SMALL, lambda h: fresh_host(h, "none"))
    first, *others = plan.group("storage")
    ran = storage_commands(events, plan)
    fs_uuid = storage.disk_uuid(plan, first)
    assert f"{storage.MKFS} -m uuid={fs_uuid} /dev/vdb" in ran[first.name]
    probes = [c for c in ran[first.name] if "peer probe" in c]
    assert len(probes) == len(others) and all(
        f"until gluster peer probe {h.fqdn};" in p for h, p in zip(others, probes))
    create = [c for c in ran[first.name] if "volume create" in c]
    assert create == ["gluster --mode=script volume create kube replica 3 " +
                      " ".join(storage.bricks(plan, "kube"))]       # on a disk: no force
    assert "gluster --mode=script volume start kube" in ran[first.name]
    assert {f"gluster --mode=script volume set kube {k} {v}"
            for k, v in storage.options(plan).items()} <= set(ran[first.name])
    for other in others:
        assert [c for c in ran[other.name] if "mkfs" not in c] == []
        assert f"{storage.MKFS} -m uuid={storage.disk_uuid(plan, other)} /dev/vdb" in \
            ran[other.name]
    # Mounted by UUID, and glusterd runs on all three.
    for host in plan.group("storage"):
        cmds = commands(events, host.name)
        assert f"mount {storage.BRICKS}" in cmds and "systemctl enable glusterd.service" in cmds


def test_a_made_pool_is_left_alone_and_a_changed_option_is_set(tmp_path):
    plan = load_plan(SMALL)
    fqdns = [h.fqdn for h in plan.group("storage")]
    current = {**storage.options(plan), "network.ping-timeout": "42"}

    def made(host):
        ours = {"TYPE": "xfs", "LABEL": storage.DISK_LABEL, "UUID": storage.disk_uuid(plan, host)}
        return {**signatures("\n".join(f"{k}={v}" for k, v in ours.items())),
                "gluster peer status": peer_xml([f for f in fqdns if f != host.fqdn]),
                "gluster volume info all": volume_xml(plan, current),
                **fresh_host(host, "none")}
    events, _ = fake_deploy(tmp_path, SMALL, made)
    ran = storage_commands(events, plan)
    first = plan.group("storage")[0].name
    ping = plan.storage.ping_timeout
    assert ran[first] == [f"gluster --mode=script volume set kube network.ping-timeout {ping}"]
    assert all(ran[h.name] == [] for h in plan.group("storage")[1:])


def test_a_disk_that_carries_a_filesystem_is_never_formatted(tmp_path):
    def foreign(host):
        return {**signatures("UUID=0f3c\nTYPE=ext4"), **fresh_host(host, "none")}
    code, output = fake_run(tmp_path, SMALL, foreign)
    assert code != 0
    assert "glus01: data disk /dev/vdb (20 GiB) carries ext4 (UUID=0f3c), not made by " \
           "kubelab; it formats only an empty disk" in output
    assert "mkfs" not in output.replace("formats", "")
    # The pool was never touched: the deploy stopped on the disk.
    assert "peer probe" not in output and "volume create" not in output


def test_a_disk_with_partitions_is_never_formatted(tmp_path):
    def partitioned(host):
        part = disk("/dev/vdb", host.data_disk, children=[
            {"name": "vdb1", "path": "/dev/vdb1", "type": "part", "size": GIB}])
        return {**fresh_host(host, "none"), "lsblk -J": block_devices(host, part)}
    code, output = fake_run(tmp_path, SMALL, partitioned)
    assert code != 0 and "data disk /dev/vdb has partitions (/dev/vdb1)" in output
    assert "mkfs.xfs" not in output


def test_containers_use_brick_directories(tmp_path):
    plan = load_plan(SMALL)
    events, _ = fake_deploy(tmp_path, SMALL, lambda h: fresh_host(h, "systemd-nspawn"))
    every = [cmd for _, _, cmd in events]
    assert not [c for c in every if "mkfs" in c or "lsblk" in c or "blkid" in c]
    create = [c for c in every if "volume create" in c]
    assert len(create) == 1 and create[0].endswith(" force")
    for host in plan.group("storage"):
        assert f"mkdir -p {storage.brick_path('kube')}" in commands(events, host.name)


# --- the mounts -----------------------------------------------------------------------------

def test_every_kubernetes_host_mounts_the_volume_from_fstab():
    plan = load_plan(SMALL)
    first, *others = [h.fqdn for h in plan.group("storage")]
    assert storage_clients.fstab_line(plan) == (
        f"{first}:/kube /mnt/gluster/kube glusterfs defaults,_netdev,noauto,"
        f"backup-volfile-servers={':'.join(others)} 0 0")
    for host in plan.group("kubernetes"):
        unit = host_files(plan, host)["/etc/systemd/system/kubelab-mount-kube.service"]
        assert "Restart=on-failure" in unit and "mountpoint -q /mnt/gluster/kube" in unit
    for host in plan.group("storage"):
        assert not [f for f in host_files(plan, host) if "kubelab-mount" in f]


def test_the_mount_is_started_after_the_volume(tmp_path):
    plan = load_plan(SMALL)
    events, _ = fake_deploy(tmp_path, SMALL, lambda h: fresh_host(h, "none"))
    start = next(i for i, (_, h, c) in enumerate(events) if "volume start kube" in c)
    for host in plan.group("kubernetes"):
        mount = [i for i, (_, h, c) in enumerate(events) if h == host.name
                 and c == "systemctl start kubelab-mount-kube.service"]
        assert mount and mount[0] > start, host.name


def test_a_mount_point_whose_times_are_out_of_range_is_left_alone(tmp_path):
    """After a storage host's reboot, stat of the mounted volume once gave an access time in
    the year 4450228: the deploy only asks whether the mount point exists, not its times."""
    plan = load_plan(SMALL)
    path = plan.shared_volume_path
    bogus = (f"user=root group=root mode=drwxr-xr-x atime=140377000000000 mtime=1764000000 "
             f"ctime=1764000000 size=4096 '{path}'")

    def mounted(host):
        return {f"%N' {path}": bogus, f"test -e {path}": "yes", **fresh_host(host, "none")}

    events, _ = fake_deploy(tmp_path, SMALL, mounted)
    for host in plan.group("kubernetes"):
        assert (f"{storage_clients.NAME} | Mount point {path}", host.name,
                f"note: {path} exists") in events
        assert f"mkdir -p {path}" not in commands(events, host.name)
