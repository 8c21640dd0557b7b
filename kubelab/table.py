"""The plan as a readable table: the 2019 design's network table, then every host."""


def _rows(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def network_rows(plan):
    rows = [("CIDR", str(plan.supernet)), ("POD CIDR", str(plan.pod_cidr)),
            ("SERVICE CIDR", str(plan.service_cidr))]
    rows += [(f"Subnet - {n.name}", str(n.cidr)) for n in plan.networks]
    rows += [(f"DHCP - {n.name}", str(n.dhcp).replace("-", " - ")) for n in plan.networks]
    rows += [(f"DNS/Gateway - {n.name}", str(n.gateway)) for n in plan.networks]
    rows += [("Control Plane", f"{plan.api_vip}:{plan.api_port} ({plan.api_name})"),
             ("MetalLB", str(plan.metallb_pool).replace("-", " - ")),
             ("Management", str(plan.management))]
    return rows


def plan_table(plan):
    hosts = [("HOST", "GROUP", "CPU", "MiB", "NIC", "NETWORK", "ADDRESS", "MAC")]
    for h in plan.hosts:
        for i, nic in enumerate([h.mgmt] + h.nics):
            first = i == 0
            hosts.append((h.name if first else "", h.group if first else "",
                          h.cpus if first else "", h.memory if first else "",
                          nic.device, nic.network, f"{nic.address}/{nic.prefixlen}", nic.mac))
    return (f"Lab {plan.name} ({plan.domain}), Kubernetes {plan.kubernetes_version}\n\n"
            f"{_rows(network_rows(plan))}\n\n{_rows(hosts)}")
