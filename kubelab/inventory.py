"""pyinfra groups and host data from the plan (read by the top-level inventory.py)."""
from pathlib import Path

from kubelab.paths import ssh_config
from kubelab.plan import GROUPS as HOST_GROUPS

# pyinfra's groups: each host group, and kubernetes (masters + workers, see Plan.group).
GROUPS = [*HOST_GROUPS, "kubernetes"]


def _nic(nic):
    return {"network": nic.network, "device": nic.device, "address": str(nic.address),
            "prefixlen": nic.prefixlen, "mac": nic.mac}


def _connection(plan, host):
    """SSH details: an existing machine from ssh_hosts, else the lab's generated ssh config."""
    existing = plan.ssh_hosts.get(host.name)
    if existing:
        data = {"ssh_hostname": existing["address"], "ssh_user": existing.get("user", "root"),
                "ssh_port": existing.get("port", 22)}
        if "key" in existing:
            data["ssh_key"] = existing["key"]
        return data
    return {"ssh_config_file": str(ssh_config(plan))}


def checks_connection(plan, host, config):
    """(url, options) for testinfra.get_host: the checks reach a host as pyinfra does."""
    existing = plan.ssh_hosts.get(host.name)
    if existing:
        user, port = existing.get("user", "root"), existing.get("port", 22)
        key = {"ssh_identity_file": existing["key"]} if "key" in existing else {}
        return f"ssh://{user}@{existing['address']}:{port}", key
    return f"ssh://{host.name}", {"ssh_config": str(config)}


def host_data(plan, host):
    return {"_sudo": True, "fqdn": host.fqdn, "group": host.group, "address": str(host.address),
            "mgmt": _nic(host.mgmt), "nics": [_nic(n) for n in host.nics],
            **_connection(plan, host)}


def group(plan, name):
    """[(host name, data)] for a pyinfra group."""
    return [(h.name, host_data(plan, h)) for h in plan.group(name)]


def ssh_config_hosts(path):
    """The host aliases an ssh config file defines (one name per `Host` line)."""
    if not path.exists():
        return set()
    return {line.split()[1] for line in path.read_text().splitlines()
            if line.startswith("Host ") and len(line.split()) == 2}


def reachable(plan, config=None):
    """Names of the planned hosts there is a way to reach: existing machines (ssh_hosts) and
    the hosts in the ssh config (by default the lab's: what `kubelab up` or `vagrant
    ssh-config` wrote)."""
    return set(plan.ssh_hosts) | ssh_config_hosts(Path(config or ssh_config(plan)))


def not_up_warning(plan):
    """What to tell a user whose run names hosts nothing can reach (None when all can be)."""
    missing = [h.name for h in plan.hosts if h.name not in reachable(plan)]
    if not missing:
        return None
    config = ssh_config(plan)
    return (f"kubelab: {len(missing)} host(s) of lab {plan.name} are not in the ssh config "
            f"{config} (not up?): {', '.join(missing)}. {bring_up_hint(config)}, or leave "
            "them out of the run (pyinfra --limit).")


def bring_up_hint(config):
    """How to bring a lab up and write its ssh config `config` (a bare `vagrant ssh-config`
    fails, writing only the hosts before the first one that is not up)."""
    return (f"Bring them up (`kubelab up`), or with Vagrant: `vagrant up`, then `vagrant "
            f"ssh-config NAME... > {config}` naming the hosts that are up (`vagrant status`)")
