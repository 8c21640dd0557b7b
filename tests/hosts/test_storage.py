"""The Gluster pool, its volumes and the Kubernetes hosts' mount, checked on running hosts.

The pool's checks (test_pool_*) need every storage host up, the clients' (test_clients_*)
a Kubernetes host. Right after a boot glusterd takes a few seconds to start the bricks and
reconnect the clients: the checks that depend on it wait for it, at most WAIT_SECONDS.
"""
import time
import uuid

from hostutil import run_ok

from tasks import storage, storage_clients
from tests.hosts.conftest import up_hosts

WAIT_SECONDS = 60


def eventually(check, what):
    """Call check() until it returns a true value (returned), at most WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"{what} (waited {WAIT_SECONDS} s)"
            return result
        time.sleep(2)


# --- the storage hosts ----------------------------------------------------------------------

def test_glusterd_runs_now_and_at_boot(storage_host, connect):
    host = connect(storage_host)
    assert host.service("glusterd").is_enabled
    eventually(lambda: host.service("glusterd").is_running, "glusterd not running")


def test_pool_every_peer_is_connected(pool_member, connect, plan):
    host = connect(pool_member)
    others = [h.fqdn for h in plan.group("storage") if h != pool_member]

    def connected():
        peers = storage.Peers().process(run_ok(host, "gluster peer status --xml").splitlines())
        return all(peers.get(name) for name in others) and peers
    eventually(connected, f"{pool_member.name}: not every peer of {others} connected")


def test_bricks_on_the_data_disk_or_in_a_directory(storage_host, connect, plan):
    """On a VM the bricks live on the data disk, mounted by UUID from /etc/fstab; in a
    container (no disk) they are directories of the root filesystem."""
    host = connect(storage_host)
    mount = host.mount_point(storage.BRICKS)
    if host.run("systemd-detect-virt --container").rc == 0:
        assert not mount.exists
        assert all(host.file(storage.brick_path(v)).is_directory for v in plan.storage.volumes)
        return
    fs_uuid = storage.disk_uuid(plan, storage_host)
    assert mount.exists and mount.filesystem == "xfs"
    assert run_ok(host, f"findmnt -n -o UUID {storage.BRICKS}").strip() == fs_uuid
    assert f"UUID={fs_uuid} {storage.BRICKS} xfs " in host.file("/etc/fstab").content_string
    assert "isize=512" in run_ok(host, f"xfs_info {storage.BRICKS}")


def test_pool_every_volume_started_with_every_brick_online(pool_member, connect, plan):
    host = connect(pool_member)
    found = storage.Volumes().process(run_ok(host, "gluster volume info all --xml").splitlines())
    for volume, replica in plan.storage.volumes.items():
        info = found.get(volume)
        assert info and info["started"], f"volume {volume} not started: {info}"
        assert info["replica"] == replica
        assert info["bricks"] == storage.bricks(plan, volume)
        assert {k: info["options"].get(k) for k in storage.options(plan)} == storage.options(plan)

        def online(name=volume):
            out = run_ok(host, f"gluster volume status {name} --xml")
            bricks = [n for n in storage.parse_xml(out).iter("node") if n.findtext("path")
                      and n.findtext("path").startswith("/")]
            return len(bricks) == len(info["bricks"]) and \
                all(b.findtext("status") == "1" for b in bricks)
        eventually(online, f"volume {volume}: not every brick online")


def test_pool_nothing_waits_for_heal(pool_member, connect, plan):
    host = connect(pool_member)
    for volume in plan.storage.volumes:
        def healed(name=volume):
            return storage.heal_pending(run_ok(host, f"gluster volume heal {name} info")) == 0
        eventually(healed, f"volume {volume}: entries wait for heal")


# --- the Kubernetes hosts -------------------------------------------------------------------

def test_clients_mount_the_volume_for_kubernetes(pool_client, connect, plan):
    host = connect(pool_client)
    volume, path = storage_clients.kubernetes_mount(plan)
    assert storage_clients.fstab_line(plan) in host.file("/etc/fstab").content_string
    assert host.service(storage_clients.unit_name(plan)).is_enabled
    first = plan.group("storage")[0].fqdn

    def mounted():
        out = host.run(f"findmnt -n -o FSTYPE,SOURCE {path}").stdout.split()
        return out == ["fuse.glusterfs", f"{first}:/{volume}"]
    eventually(mounted, f"{path}: not a glusterfs mount of {first}:/{volume}")


def test_clients_a_file_written_on_one_reads_back_on_another(pool_client, connect, plan, request):
    """Written through this host's mount, read through the next Kubernetes host's (itself
    when it is the only one up)."""
    clients = [h for h in up_hosts(request.config, plan) if h.group in ("masters", "workers")]
    reader = clients[(clients.index(pool_client) + 1) % len(clients)]
    _, path = storage_clients.kubernetes_mount(plan)
    name = f"{path}/.kubelab-check-{uuid.uuid4().hex}"
    writer = connect(pool_client)
    written = run_ok(writer, f"head -c 1048576 /dev/urandom | tee {name} | sha256sum").split()[0]
    try:
        assert run_ok(connect(reader), f"sha256sum {name}").split()[0] == written
    finally:
        run_ok(writer, f"rm -f {name}")
