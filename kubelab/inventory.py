"""pyinfra groups and host data from the plan (read by the top-level inventory.py)."""
from kubelab.paths import ssh_config

GROUPS = ["gateway", "loadbalancers", "masters", "workers", "storage", "kubernetes"]


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


def host_data(plan, host):
    return {"_sudo": True, "fqdn": host.fqdn, "group": host.group, "address": str(host.address),
            "mgmt": _nic(host.mgmt), "nics": [_nic(n) for n in host.nics],
            **_connection(plan, host)}


def group(plan, name):
    """[(host name, data)] for a pyinfra group."""
    return [(h.name, host_data(plan, h)) for h in plan.group(name)]
