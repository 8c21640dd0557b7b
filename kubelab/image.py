"""The Debian root filesystem every host boots (the release of kubelab.debian): containers
directly, VMs inside the box.

Built locally with debootstrap from the Debian archive this machine's apt already uses (for
the image's suite, or for this machine's own release, e.g. a Debian 12 lab machine), then
every stage's packages (tasks.image_packages) installed in a chroot with their services disabled:
hosts come up clean and the deploy enables what each role needs.

Cached under IMAGE_CACHE/<hash>/rootfs, the hash covering every input (suite, packages, this
module, files/image/, the apt sources and the Vagrant key copied in): a rebuild happens only
when one changes. The build works in a temporary directory beside the cache entry and renames
it at the end; every mount lives in a private mount namespace of the step that needs it, so a
failure half-way leaves nothing mounted, and the temporary directory is removed.
"""
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from kubelab.debian import SUITE
from kubelab.errors import LabError
from kubelab.paths import IMAGE_CACHE, REPO
from kubelab.progress import phase
from kubelab.system import missing_tools, run
from tasks import image_packages, stage_packages

FILES = REPO / "files" / "image"
# What a bootable system needs beyond the roles' packages (kernel and grub: the box adds them).
# linux-sysctl-defaults: Debian's sysctl defaults (in systemd up to Debian 12), among them the
# ping_group_range that lets users ping now that trixie's ping has no cap_net_raw.
BASE_PACKAGES = ["systemd-sysv", "dbus", "libpam-systemd", "udev", "ca-certificates",
                 "linux-sysctl-defaults"]
# Services the image keeps enabled: how every host is reached and gets its first address.
KEEP_ENABLED = {"ssh.service", "networking.service"}
# Background apt runs would hold dpkg's lock while the deploy installs: the deploy runs apt.
ALSO_DISABLED = ["apt-daily.timer", "apt-daily-upgrade.timer"]
APT_SOURCES = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")
VAGRANT_PACKAGE = "vagrant"
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
              "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
# iptables-persistent would otherwise save THIS machine's firewall rules into the image.
DEBCONF = """iptables-persistent iptables-persistent/autosave_v4 boolean false
iptables-persistent iptables-persistent/autosave_v6 boolean false
"""


class ImageError(LabError):
    pass


# --- inputs ---------------------------------------------------------------------------------

def _deb822_stanzas(text):
    """deb822 stanzas as dicts (comments dropped, continuation lines joined)."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def _host_sources():
    """This machine's apt sources as [{types, uris, suites, components, signed-by}], from
    deb822 *.sources files and one-line sources.list files."""
    sources = []
    for path in sorted(glob.glob(str(APT_SOURCES / "sources.list.d" / "*.sources"))):
        for s in _deb822_stanzas(Path(path).read_text()):
            if s.get("enabled", "yes").lower() != "no":
                sources.append({k: s.get(k, "") for k in
                                ("types", "uris", "suites", "components", "signed-by")})
    lists = [APT_SOURCES / "sources.list",
             *sorted(Path(p) for p in glob.glob(str(APT_SOURCES / "sources.list.d" / "*.list")))]
    for path in lists:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] in ("deb", "deb-src"):
                sources.append({"types": line[0], "uris": line[1], "suites": line[2],
                                "components": " ".join(line[3:]), "signed-by": ""})
    return sources


def _host_release():
    """This machine's release codename (VERSION_CODENAME of /etc/os-release), or None."""
    try:
        found = re.search(r'^VERSION_CODENAME="?([a-z]+)"?$', OS_RELEASE.read_text(), re.M)
    except OSError:
        return None
    return found.group(1) if found else None


def _suite_sources():
    """The Debian archive's sources for our suite (SUITE, SUITE-updates, SUITE-security):
    the host's sources for SUITE, or else those for the host's own release, renamed (the lab
    machine may run an older Debian than its hosts)."""
    host_sources = [s for s in _host_sources() if "deb" in s["types"].split()]
    for release in (SUITE, _host_release()):
        found = [dict(s, suites=" ".join(SUITE + x[len(release):] for x in s["suites"].split()))
                 for s in host_sources if release and
                 all(x == release or x.startswith(release + "-") for x in s["suites"].split())]
        if found:
            return found
    return []


def mirror():
    """The Debian archive: $KUBELAB_DEBIAN_MIRROR, else the one this machine's apt uses."""
    override = os.environ.get("KUBELAB_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    for s in _suite_sources():
        if SUITE in s["suites"].split() and s["uris"]:
            return s["uris"].split()[0].rstrip("/")
    raise ImageError(
        f"no Debian mirror for '{SUITE}' (or this machine's release, {_host_release()}) found "
        f"in {APT_SOURCES}/sources.list or {APT_SOURCES}/sources.list.d/*.sources: add one "
        "there, or set KUBELAB_DEBIAN_MIRROR=<archive URL>")


def image_sources():
    """The image's own /etc/apt/sources.list.d/debian.sources (deb822)."""
    stanzas = _suite_sources()
    if os.environ.get("KUBELAB_DEBIAN_MIRROR"):
        main = {"uris": mirror(), "suites": f"{SUITE} {SUITE}-updates", "components": "main"}
        stanzas = [main] + [s for s in stanzas if f"{SUITE}-security" in s["suites"].split()]
    else:
        mirror()    # raises a clear error when there is none
    text = []
    for s in stanzas:
        lines = ["Types: deb", f"URIs: {s['uris']}", f"Suites: {s['suites']}",
                 f"Components: {s['components'] or 'main'}"]
        if s.get("signed-by"):
            lines.append(f"Signed-By: {s['signed-by']}")
        text.append("\n".join(lines))
    return "\n\n".join(text) + "\n"


def vagrant_public_key():
    """Vagrant's insecure public key, as the Debian vagrant package installs it."""
    listed = run("dpkg", "-L", VAGRANT_PACKAGE, check=False)
    keys = [p for p in listed.stdout.splitlines() if p.endswith("/keys/vagrant.pub")]
    if listed.returncode != 0 or not keys:
        raise ImageError(f"Vagrant's insecure key not found: install the Debian package "
                         f"'{VAGRANT_PACKAGE}' (apt-get install {VAGRANT_PACKAGE})")
    return Path(keys[0]).read_text()


def _inputs():
    files = {p.name: p.read_text() for p in sorted(FILES.iterdir()) if p.is_file()}
    return {"suite": SUITE, "packages": [BASE_PACKAGES, image_packages()],
            "sources": image_sources(), "vagrant_key": vagrant_public_key(), "files": files,
            "module": Path(__file__).read_text()}


def image_hash():
    """Hash of every input of the image: a change to any of them means a new image."""
    blob = json.dumps(_inputs(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --- build ----------------------------------------------------------------------------------

def chroot_mounts(root, devices=()):
    """Shell lines giving a chroot /proc, /sys and a /dev of its own (a tmpfs with the basic
    nodes plus `devices`). Never the host's /dev: package scripts in the chroot (udev's)
    would change the host's device nodes, /dev/kvm's group among them."""
    nodes = " ".join(["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                      "/dev/tty", *devices])
    return (f"mount -t proc proc {root}/proc\n"
            f"mount -t sysfs sysfs {root}/sys\n"
            f"mount -t tmpfs -o mode=755 tmpfs {root}/dev\n"
            f"cp -a {nodes} {root}/dev/\n"
            f"mkdir -p {root}/dev/pts {root}/dev/shm\n")


def _chroot(root, script, log):
    """Run a shell script in the chroot, its mounts in a private mount namespace: they end
    with the command, whatever happens."""
    mounts = chroot_mounts(root) + f'exec chroot {root} /bin/sh -ec "$0"\n'
    run("unshare", "--mount", "--propagation", "private", "/bin/sh", "-ec", mounts, script,
        log=log, env=CHROOT_ENV)


def mounts_under(path):
    """Mount points at or below path."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1].encode().decode("unicode_escape") for line in mounts]
    prefix = str(path).rstrip("/") + "/"
    return [p for p in points if p == str(path) or p.startswith(prefix)]


def _in_use(path):
    """True while an overlay mount (a container's root) has path as its lower layer."""
    with open("/proc/self/mounts") as mounts:
        return any(f"lowerdir={path}" in line for line in mounts)


def _remove_tree(path):
    """Unmount anything left under path (deepest first), then delete it, never crossing into
    a file system still mounted there."""
    for point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL)
    if mounts_under(path):
        raise ImageError(f"{path} still has mounts ({mounts_under(path)}); not removing it")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def _install(root, name, text, mode=0o644):
    dest = root / name.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    dest.chmod(mode)


def _configure_apt(root, log):
    _install(root, "etc/apt/sources.list.d/debian.sources", image_sources())
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    _install(root, "usr/sbin/policy-rc.d", (FILES / "policy-rc.d").read_text(), 0o755)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")   # for apt during the build
    _chroot(root, f"echo '{DEBCONF}' | debconf-set-selections", log)


def _disable_role_services(root, base, log):
    """Disable every unit that the roles' packages, or what they pulled in, enabled (ssh and
    networking excepted): `base` is the package list before the roles' install."""
    keep = " ".join(sorted(KEEP_ENABLED))
    script = f"""
dpkg-query -W -f '${{Package}}\\n' | sort > /tmp/after
new=$(printf '%s\\n' {' '.join(base)} | sort | comm -13 - /tmp/after); rm /tmp/after
for unit in $(dpkg -L $new 2>/dev/null | grep -E '/systemd/system/[^/]+\\.(service|socket|timer)$' \\
              | xargs -rn1 basename | sort -u) {' '.join(ALSO_DISABLED)}; do
  case " {keep} " in *" $unit "*) continue;; esac
  if [ "$(systemctl is-enabled "$unit" 2>/dev/null)" = enabled ]; then
    systemctl disable "$unit" 2>&1; echo "disabled: $unit"
  fi
done"""
    _chroot(root, script, log)


def _installed(root):
    return run("chroot", str(root), "dpkg-query", "-W", "-f", "${Package}\\n",
               env=CHROOT_ENV).stdout.split()


def stage_versions(root):
    """{stage: "package version, ..."}: what the image holds of each stage's packages."""
    listed = run("chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${Version}\\n",
                 *image_packages(), env=CHROOT_ENV).stdout
    version = dict(line.split() for line in listed.splitlines())
    return {stage: ", ".join(f"{p} {version[p]}" for p in names)
            for stage, names in stage_packages().items()}


def _configure_system(root, log):
    files = FILES
    _install(root, "etc/network/interfaces", (files / "interfaces").read_text())
    _install(root, "etc/sudoers.d/vagrant", (files / "sudoers-vagrant").read_text(), 0o440)
    _install(root, "etc/ssh/sshd_config.d/kubelab.conf", (files / "sshd-kubelab.conf").read_text())
    _install(root, "etc/systemd/system/ssh-hostkeys.service",
             (files / "ssh-hostkeys.service").read_text())
    _install(root, "etc/hostname", "localhost\n")
    _install(root, "etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    key = vagrant_public_key()
    # No password for anyone: '*' can never match, yet sshd keeps key logins open. vagrant's
    # systemd user manager runs from boot (linger): else every SSH login after a pause (each
    # deploy, each run of the checks) starts one and stops it, ~60 ms of a host's CPU.
    _chroot(root, f"""
id vagrant >/dev/null 2>&1 || useradd --create-home --shell /bin/bash vagrant
usermod -p '*' vagrant
install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh
echo '{key.strip()}' > /home/vagrant/.ssh/authorized_keys
chown vagrant:vagrant /home/vagrant/.ssh/authorized_keys
chmod 600 /home/vagrant/.ssh/authorized_keys
visudo -cf /etc/sudoers.d/vagrant
install -d /var/lib/systemd/linger
touch /var/lib/systemd/linger/vagrant
systemctl enable ssh-hostkeys.service
rm -f /etc/ssh/ssh_host_*
apt-get clean
""", log)
    # Every host makes its own machine-id at first boot.
    _install(root, "etc/machine-id", "")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "var/lib/dbus").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dbus/machine-id").symlink_to("/etc/machine-id")
    (root / "usr/sbin/policy-rc.d").unlink()
    # No resolver of this machine in the image: the deploy points hosts at the gateway.
    _install(root, "etc/resolv.conf", "")


def _build_into(tmp, log):
    with phase(f"debootstrap {SUITE} (minbase) from {mirror()}"):
        run("unshare", "--mount", "--propagation", "private", "debootstrap",
            "--variant=minbase", "--components=main", SUITE, str(tmp), mirror(), log=log)
    with phase("apt sources, debconf answers, policy-rc.d"):
        _configure_apt(tmp, log)
    install = "apt-get install -y -q --no-install-recommends "
    with phase(f"installing the base system ({len(BASE_PACKAGES)} packages)"):
        _chroot(tmp, "apt-get update -q && " + install + " ".join(BASE_PACKAGES), log)
    base = _installed(tmp)
    roles = image_packages()
    with phase(f"installing the roles' {len(roles)} packages (services off)"):
        _chroot(tmp, install + " ".join(roles), log)
    with phase("disabling role services"):
        _disable_role_services(tmp, base, log)
    with phase("users, keys, first-boot units"):
        _configure_system(tmp, log)


def _clear_stale(entry):
    """Remove temporary dirs a killed build left (their PID no longer runs)."""
    for tmp in entry.glob("rootfs.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
            _remove_tree(tmp)


def _check_host():
    """Refuse clearly, before anything is written, when this machine cannot build."""
    problems = [] if os.geteuid() == 0 else ["building the image needs root (chroot, mounts)"]
    problems += missing_tools(["debootstrap", "unshare", "chroot"])
    if problems:
        raise ImageError("cannot build the image:\n" + "\n".join(f"- {p}" for p in problems))


def build(force=False):
    """Build the rootfs unless the cached one matches every input. Returns its path."""
    digest = image_hash()
    entry = IMAGE_CACHE / digest
    rootfs_dir = entry / "rootfs"
    if force or not rootfs_dir.exists():
        _check_host()       # before anything is written
    entry.mkdir(parents=True, exist_ok=True)
    with open(entry / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)    # one build per entry, even from two commands
        if rootfs_dir.exists() and not force:
            return rootfs_dir
        if rootfs_dir.exists() and _in_use(rootfs_dir):
            raise ImageError(f"{rootfs_dir} is the root of running containers: destroy the "
                             "container lab before rebuilding it")
        _clear_stale(entry)
        tmp = entry / f"rootfs.tmp-{os.getpid()}"
        log = entry / "build.log"
        log.write_text("")
        try:
            with phase(f"Building the {SUITE} rootfs {digest} (log: {log})"):
                tmp.mkdir()
                _build_into(tmp, log)
                if rootfs_dir.exists():
                    old = entry / f"rootfs.old-{uuid.uuid4().hex[:8]}"
                    rootfs_dir.rename(old)
                    _remove_tree(old)
                tmp.rename(rootfs_dir)
                (entry / "inputs.json").write_text(json.dumps(
                    {"suite": SUITE, "mirror": mirror(),
                     "packages": BASE_PACKAGES + image_packages()}, indent=2) + "\n")
        finally:
            if tmp.exists():
                _remove_tree(tmp)
    _remove_other_images(keep=digest)
    return rootfs_dir


def _remove_other_images(keep):
    """Drop the rootfs of earlier inputs (565 MB each), unless a build holds its lock or a
    container still runs on it."""
    for entry in IMAGE_CACHE.iterdir():
        if not re.fullmatch(r"[0-9a-f]{16}", entry.name) or entry.name == keep:
            continue
        with open(entry / "lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if not _in_use(entry / "rootfs"):
                _remove_tree(entry)


def rootfs():
    """The cached rootfs directory for the current inputs (built first if missing)."""
    return build(force=False)
