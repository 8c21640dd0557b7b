"""The Kubernetes hosts' mount of the Gluster volume for Kubernetes (storage.kubernetes_volume)
with the FUSE client, at kubernetes.shared_volume_path (where the StorageClass keeps its
volumes).

The mount is a line of /etc/fstab (_netdev, and backup volfile servers: it does not depend on
the first storage host being up) marked noauto, mounted by a unit of its own at boot and
retried until a volfile server answers: the storage hosts may boot after this one, and a
failed boot-time mount would never be tried again.
"""
from shlex import quote

from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations import files, server, systemd

from kubelab.facts import Exists
from tasks.helpers import Change, found_fact, put, render_files, restart_if_changed, will_ask

NAME = "Gluster mounts"
GROUPS = ("masters", "workers")
PACKAGES = ["glusterfs-client"]


def kubernetes_mount(plan):
    """(volume name, mount path) of the volume every Kubernetes host mounts."""
    return plan.storage.kubernetes_volume, plan.shared_volume_path


def unit_name(plan):
    return f"kubelab-mount-{kubernetes_mount(plan)[0]}.service"


def fstab_line(plan):
    volume, path = kubernetes_mount(plan)
    first, *others = [h.fqdn for h in plan.group("storage")]
    return (f"{first}:/{volume} {path} glusterfs defaults,_netdev,noauto,"
            f"backup-volfile-servers={':'.join(others)} 0 0")


def files_for(plan, me, secrets):
    volume, path = kubernetes_mount(plan)
    return render_files({f"/etc/systemd/system/{unit_name(plan)}":
                         "storage_clients/mount.service.j2"},
                        plan=plan, me=me, volume=volume, path=path)


def deploy(plan, me, secrets):
    volume, path = kubernetes_mount(plan)
    will_ask(Exists, path=path)
    mount_point(name=f"Mount point {path}", path=path)
    line = Change(files.line(name=f"{path} in /etc/fstab", path="/etc/fstab",
                             line=f"^[^ ]* {path} ", replace=fstab_line(plan)), "/etc/fstab")
    changes = [line, *(put(dest, text) for dest, text in files_for(plan, me, secrets).items())]
    # systemd makes the mount unit from /etc/fstab when it reloads.
    systemd.daemon_reload(name="systemd reads fstab and the mount unit again",
                          _if=lambda: any(op.did_change() for op in changes))
    # A changed fstab line takes effect on the next mount: unmount, the restart mounts again.
    server.shell(name=f"Unmount {path} (its fstab line changed)",
                 commands=[f"! mountpoint -q {path} || umount {path}"], _if=line.did_change)
    restart_if_changed(unit_name(plan), *changes)


@operation()
def mount_point(path):
    """The directory the volume is mounted on, made when missing. Not files.directory: its
    fact reads the times of what is mounted there, and after a storage host's reboot the FUSE
    client once gave an access time in the year 4450228, which stopped the deploy."""
    if found_fact(Exists, path=path):
        host.noop(f"{path} exists")
        return
    yield f"mkdir -p {quote(path)}"
