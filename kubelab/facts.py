"""pyinfra facts the deploy needs beyond pyinfra's own: one round-trip each (pyinfra 3.10
caches no fact: each get_fact is a command on the host)."""
import json
from shlex import quote

from pyinfra.api import FactBase
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus


class Container(FactBase):
    """The container technology the host runs in (e.g. 'systemd-nspawn'), or None on a VM.

    Inside a container the kernel is the lab machine's: its clock, its kernel modules and its
    non-namespaced sysctls are not the host's to set. tasks/helpers.in_container decides from it.
    """

    def command(self):
        return "systemd-detect-virt --container || true"

    def process(self, output):
        kind = "".join(output).strip()
        return None if kind in ("", "none") else kind


class Links(FactBase):
    """Network links by MAC: {mac: {"name": ifname, "ipv4": ["a.b.c.d/len", ...]}}.

    NICs are found by MAC, never by name: names depend on the provider and the driver.
    """

    default = dict

    def command(self):
        return "ip -j addr show"

    def process(self, output):
        links = {}
        for link in json.loads("".join(output) or "[]"):
            mac = link.get("address", "").lower()
            if link.get("link_type") != "ether" or not mac:
                continue
            links[mac] = {"name": link["ifname"],
                          "ipv4": [f"{a['local']}/{a['prefixlen']}"
                                   for a in link.get("addr_info", []) if a.get("family") == "inet"]}
        return links


class DefaultRoutes(FactBase):
    """IPv4 default routes as [{"dev": ifname, "gateway": address or None}]."""

    default = list

    def command(self):
        return "ip -j -4 route show default"

    def process(self, output):
        return [{"dev": r.get("dev"), "gateway": r.get("gateway")}
                for r in json.loads("".join(output) or "[]")]


class Sha256File(FactBase):
    """The sha256 of a file, or None when it does not exist."""

    def command(self, path):
        return f"sha256sum {quote(path)} 2>/dev/null || true"

    def process(self, output):
        text = "".join(output).split()
        return text[0] if text else None


class FileState(FactBase):
    """{"mode": "644", "user", "group", "sha256"} of a file, None when it does not exist: in
    one round trip what pyinfra's files.put asks in three (the file, its directory, its
    sha1)."""

    def command(self, path):
        return f"stat -c '%a %U %G' {quote(path)} 2>/dev/null && sha256sum {quote(path)} || true"

    def process(self, output):
        lines = [line for line in output if line.strip()]
        if len(lines) != 2 or len(lines[0].split()) != 3:
            return None
        mode, user, group = lines[0].split()
        return {"mode": mode, "user": user, "group": group, "sha256": lines[1].split()[0]}


class UnitState(FactBase):
    """(running, enabled) of a systemd unit, judged as pyinfra's SystemdStatus and
    SystemdEnabled judge them, in one round trip instead of their two."""

    def default(self):
        return False, False

    def command(self, unit):
        return f"systemctl show --property Id --property UnitFileState --property SubState {quote(unit)}"

    def process(self, output):
        found = dict(line.strip().split("=", 1) for line in output if "=" in line)
        return (found.get("SubState") in SystemdStatus.state_values,
                found.get("UnitFileState") in SystemdEnabled.state_values)


class StaleService(FactBase):
    """Whether `service` runs with a config older than one of `paths`: a config written after
    the service last (re)started or reloaded, as a run interrupted between the two leaves it.
    A service that never started is not stale (starting it reads the new config)."""

    def command(self, service, paths, stamp):
        files = " ".join(map(quote, paths))
        return (f"since=$(systemctl show -p ActiveEnterTimestamp --value {quote(service)}); "
                f'[ -n "$since" ] || exit 0; t=$(date -d "$since" +%s); '
                f"r=$(stat -c %Y {quote(stamp)} 2>/dev/null || echo 0); [ $r -gt $t ] && t=$r; "
                f'for p in {files}; do [ $(stat -c %Y "$p" 2>/dev/null || echo 0) -gt $t ] '
                "&& echo stale; done; true")

    def process(self, output):
        return "stale" in output


class ServiceState(FactBase):
    """(stale, running, enabled) of a service: StaleService and UnitState in one round trip."""

    def default(self):
        return False, False, False

    def command(self, service, unit, paths, stamp):
        return (f"( {StaleService().command(service, paths, stamp)} ); "
                f"{UnitState().command(unit)}")

    def process(self, output):
        return (StaleService().process(output), *UnitState().process(output))


class Exists(FactBase):
    """Whether a path exists (the state a run-once step leaves behind, e.g. kubeadm's
    admin.conf)."""

    def command(self, path):
        return f"test -e {quote(path)} && echo yes || true"

    def process(self, output):
        return "".join(output).strip() == "yes"


class Codename(FactBase):
    """The Debian release's code name (bookworm, trixie): third-party apt repositories such
    as Docker's have one suite per release."""

    def command(self):
        return "sed -n 's/^VERSION_CODENAME=//p' /etc/os-release"

    def process(self, output):
        return "".join(output).strip()


class SwapDevices(FactBase):
    """The swap areas in use (kubelet refuses to run beside swap by default)."""

    default = list

    def command(self):
        return "tail -n +2 /proc/swaps"

    def process(self, output):
        return [line.split()[0] for line in output if line.strip()]


FACT_MARK = "kubelab-fact "     # Facts: the line before each fact's output


class Facts(FactBase):
    """Several facts of the host in one round trip: [answer, ...] for `asked`, a list of
    (fact class, kwargs), each as pyinfra would give it. A fact whose command fails answers
    Facts.FAILED: ask it alone, and pyinfra reports the failure as its own."""

    FAILED = object()

    def command(self, asked):
        self.asked = asked      # pyinfra processes the output with this same instance
        # Each in a subshell: a command's `exit` ends only its own.
        parts = [f"echo '{FACT_MARK}{i}'; ( {_text(fact().command(**kwargs))} ) "
                 f"|| echo '{FACT_MARK}failed'" for i, (fact, kwargs) in enumerate(asked)]
        return f"{{ {'; '.join(parts)} ; }} 2>/dev/null"

    def process(self, output):
        outputs, failed = {}, set()
        for line in output:
            if line == f"{FACT_MARK}failed":
                failed.add(len(outputs) - 1)
            elif line.startswith(FACT_MARK):
                outputs[len(outputs)] = []
            elif outputs:
                outputs[len(outputs) - 1].append(line)
        return [self.FAILED if i in failed or i not in outputs
                else fact().process(outputs[i]) if outputs[i] else fact().default()
                for i, (fact, _) in enumerate(self.asked)]


def _text(command):
    """A fact's command as shell text (pyinfra gives some as a StringCommand)."""
    return command if isinstance(command, str) else command.get_raw_value()
