"""kubelab drill storage: a storage host loses its power while a Kubernetes host writes.

A client (the first Kubernetes host) writes numbered files with their checksums through its
Gluster mount, continuously, beside a bulk writer (the load). The first storage host (the
volfile server the client first contacted) is cut off: it falls silent on the storage
network, then its power is cut. The drill measures the longest write stall, powers the host
on again, waits until its bricks are online and measures how long the self-heal takes (heal
info empty), then checks every file written: through the mount, and every copy on the
bricks.

Falling silent first: a killed container's kernel would still close its TCP connections,
which tells the peers at once; a power cut never does, so peers find out only by
network.ping-timeout. On a VM the silence is the power cut itself.
"""
import statistics
import time
import uuid

from kubelab.drills import DrillError, power_cut, power_on, wait_until
from kubelab.drills import run as on_host
from tasks import storage, storage_clients

WARMUP_SECONDS = 5      # writes before the cut: the client's normal pace
DOWN_SECONDS = 10       # the host stays off at least this long (longer than a stall)
WAIT_SECONDS = 300      # for bricks online, heal, the writers to stop
LOAD_MIB = 8            # each bulk write (fsynced), over and over, on LOAD_FILES files
LOAD_FILES = 4

WRITER = """
d={dir}; log={log}; stop={stop}; data={log}.data
mkdir -p $d
i=0
while [ ! -e $stop ]; do
  i=$((i+1))
  head -c 65536 /dev/urandom > $data
  sum=$(sha256sum < $data | cut -c1-64)
  if dd if=$data of=$d/$i bs=64k conv=fsync status=none 2>/dev/null; then
    echo "$i $sum $(date +%s.%N)" >> $log
  else
    echo "$i FAILED $(date +%s.%N)" >> $log
  fi
  sleep 0.05
done
echo "STOP - $(date +%s.%N)" >> $log
"""
LOAD = """
n=0
while [ ! -e {stop} ]; do
  n=$((n+1))
  dd if=/dev/zero of={dir}/load.$((n % {files})) bs=1M count={mib} conv=fsync status=none
done
"""


def _bricks_online(plan, via, volume, fqdn=None):
    """Whether every brick (of host `fqdn`, or of all) shows online from host `via`."""
    out = on_host(plan, via, f"gluster volume status {volume} --xml", check=False).stdout
    root = storage.parse_xml(out)
    if root is None:
        return False
    nodes = [n for n in root.iter("node") if (n.findtext("path") or "").startswith("/")]
    if fqdn:
        nodes = [n for n in nodes if n.findtext("hostname") == fqdn]
    return bool(nodes) and all(n.findtext("status") == "1" for n in nodes)


def _pending(plan, via, volume):
    out = on_host(plan, via, f"gluster volume heal {volume} info", check=False, timeout=120)
    return storage.heal_pending(out.stdout)


def _background(plan, host, path, script):
    on_host(plan, host, f"cat > {path} <<'EOF'\n{script}\nEOF\n"
                        f"setsid sh {path} >/dev/null 2>&1 </dev/null &")


def _silence(plan, host, on):
    """Drop (on) or allow again (off) every packet of `host`'s storage-network address."""
    address = host.address
    verb = "-I" if on else "-D"
    on_host(plan, host, f"iptables {verb} INPUT -d {address} -j DROP; "
                        f"iptables {verb} OUTPUT -s {address} -j DROP", check=on)


def _writes(log_text):
    """(files {n: checksum}, completion times, failed writes, stop time) of the writer log."""
    files, times, failed, stop = {}, [], 0, None
    for line in log_text.splitlines():
        n, value, at = line.split()
        if n == "STOP":
            stop = float(at)
        elif value == "FAILED":
            failed += 1
        else:
            files[n] = value
            times.append(float(at))
    return files, times, failed, stop


def _disconnects(plan, client_log, volume):
    """{brick host fqdn: disconnect messages} in the client's log lines."""
    hosts = [b.split(":")[0] for b in storage.bricks(plan, volume)]
    found = {}
    for line in client_log.splitlines():
        if "disconnected from" not in line and "has not responded" not in line:
            continue
        for i, fqdn in enumerate(hosts):
            if f"{volume}-client-{i}:" in line or f"{volume}-client-{i}." in line:
                found[fqdn] = found.get(fqdn, 0) + 1
    return found


def _power_cut_and_back(plan, timeline, victim, survivor, volume):
    """Silence and cut `victim`, power it on DOWN_SECONDS later; returns the drill times of
    the cut and of its bricks online again."""
    _silence(plan, victim, on=True)
    power_cut(plan, victim)
    timeline.mark(f"{victim.name}: silent on the storage network, power cut")
    cut = timeline.now()
    time.sleep(DOWN_SECONDS)
    try:
        power_on(plan, victim)
        timeline.mark(f"{victim.name}: powered on, answers SSH")
    finally:
        _silence(plan, victim, on=False)
    wait_until(lambda: _bricks_online(plan, survivor, volume, victim.fqdn),
               f"{victim.name}'s bricks online", WAIT_SECONDS)
    timeline.mark(f"{victim.name}: bricks online")
    return cut, timeline.now()


def run(plan, timeline):
    volume, mount = storage_clients.kubernetes_mount(plan)
    client = plan.group("kubernetes")[0]
    victim, survivor = plan.group("storage")[0], plan.group("storage")[1]
    replica = plan.storage.volumes[volume]
    drill_id = uuid.uuid4().hex[:8]
    directory = f"{mount}/.kubelab-drill-{drill_id}"
    log, stop = f"/var/tmp/kubelab-drill-{drill_id}.log", f"/var/tmp/kubelab-drill-{drill_id}.stop"
    client_log = f"/var/log/glusterfs/{mount.strip('/').replace('/', '-')}.log"

    if on_host(plan, client, f"findmnt -n -o FSTYPE {mount}", check=False).stdout.strip() \
            != "fuse.glusterfs" or _pending(plan, survivor, volume) != 0 or \
            not _bricks_online(plan, survivor, volume):
        raise DrillError(f"volume {volume} is not healthy before the drill (mounted at {mount} "
                         f"on {client.name}, every brick online, nothing to heal): deploy the "
                         "lab and run `kubelab verify` first")
    log_lines = int(on_host(plan, client, f"wc -l < {client_log}").stdout.strip() or 0)
    timeline.mark(f"{client.name} writes files to {directory} (and a bulk load)")
    _background(plan, client, f"/var/tmp/kubelab-drill-{drill_id}.sh",
                WRITER.format(dir=directory, log=log, stop=stop))
    _background(plan, client, f"/var/tmp/kubelab-drill-{drill_id}-load.sh",
                LOAD.format(dir=directory, stop=stop, files=LOAD_FILES, mib=LOAD_MIB))
    try:
        time.sleep(WARMUP_SECONDS)
        cut, back = _power_cut_and_back(plan, timeline, victim, survivor, volume)
    finally:
        on_host(plan, client, f"touch {stop}", check=False)    # whatever happened
    wait_until(lambda: "STOP" in on_host(plan, client, f"cat {log}").stdout
               and not on_host(plan, client, f"pgrep -f [k]ubelab-drill-{drill_id}",
                               check=False).stdout, "the writers to stop", WAIT_SECONDS)
    files, times, failed, stopped = _writes(on_host(plan, client, f"cat {log}").stdout)
    timeline.mark(f"writers stopped: {len(files)} files written, {failed} writes failed")

    on_host(plan, survivor, f"gluster volume heal {volume}", check=False)   # may say unsuccessful
    wait_until(lambda: _pending(plan, survivor, volume) == 0, "heal info empty", WAIT_SECONDS)
    heal_s = timeline.now() - back
    timeline.mark(f"heal info empty ({heal_s:.1f} s after the bricks came back)")

    through_mount = on_host(plan, client, f"cd {directory} && sha256sum [0-9]*",
                            timeout=300).stdout
    read = {name: value for value, name in (line.split() for line in through_mount.splitlines())}
    lost = [n for n in files if n not in read]
    corrupt = [n for n in files if n in read and read[n] != files[n]]
    copies = {n: 0 for n in files}
    bad_copies = 0
    on_brick = f"{storage.brick_path(volume)}/{directory.rsplit('/', 1)[1]}"
    for server in plan.group("storage"):
        out = on_host(plan, server, f"cd {on_brick} && sha256sum [0-9]* 2>/dev/null || true",
                      timeout=300).stdout
        for value, name in (line.split() for line in out.splitlines()):
            if name in files and value == files[name]:
                copies[name] += 1
            elif name in files:
                bad_copies += 1
    missing_copies = sum(replica - c for c in copies.values() if c < replica)
    timeline.mark("every file read back through the mount and on every brick")

    new_log = on_host(plan, client, f"tail -n +{log_lines + 1} {client_log}").stdout
    disconnects = _disconnects(plan, new_log, volume)
    on_host(plan, client, f"rm -rf {directory} {log} {log}.data {stop} "
                          f"/var/tmp/kubelab-drill-{drill_id}*.sh", timeout=120)

    gaps = [b - a for a, b in zip(times, times[1:] + ([stopped] if stopped else []))]
    return {
        "files_written": len(files),
        "write_stall_s": round(max(gaps), 2) if gaps else None,
        "usual_write_s": round(statistics.median(gaps), 3) if gaps else None,
        "failed_writes": failed,
        "lost_files": len(lost),
        "corrupt_files": len(corrupt) + bad_copies,
        "missing_brick_copies": missing_copies,
        "heal_s": round(heal_s, 1),
        "down_s": round(back - cut, 1),
        "ping_timeout_s": plan.storage.ping_timeout,
        "killed_host": victim.name,
        "client": client.name,
        "spurious_disconnects": sum(n for fqdn, n in disconnects.items()
                                    if fqdn != victim.fqdn),
        "disconnects": disconnects,
    }

