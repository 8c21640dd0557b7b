"""What the spec's values mean together: every rule here runs before anything is touched.

address_problems() lists the addresses that do not parse (reported with the schema's
problems); check() then runs the rules on the Plan and raises one SpecError with every
problem, each naming its field and the fix.
"""
import re

from netaddr import AddrFormatError, IPAddress, IPNetwork

from kubelab.spec import SUPPORTED_KUBERNETES, Problem, SpecError

# What a role needs at the least (MiB of memory, CPUs): kubeadm's preflight wants
# 2 CPUs and 1700 MiB on a control-plane node; glusterd and pacemaker are small.
# A load balancer VM of 384 MiB lost corosync to the OOM killer while crmsh loaded the
# resources (2026-11-27, Debian 13): 512 is the least measured to work.
ROLE_MINIMUM = {"gateway": (256, 1), "loadbalancers": (512, 1), "masters": (1700, 2),
                "workers": (1024, 1), "storage": (512, 1)}
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Network names end up in bridge names (15 characters with a prefix), file names, dnsmasq
# tags and libvirt network names: short and plain.
NETWORK_NAME = re.compile(r"^[a-z][a-z0-9]{0,9}$")
# A container's machine name is <lab>-<host>, a host name: at most 63 characters.
MACHINE_NAME_MAX = 63
# Addresses no host can hold as an ordinary unicast address (management.outside).
NOT_UNICAST = ["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3"]
# Each Kubernetes node gets a /24 of the pod CIDR (kube-controller-manager's and Flannel's
# default subnet size).
NODE_POD_PREFIX = 24


def _field(spec, *keys):
    """spec[k1][k2]..., or None where the spec lacks it (the schema check says so)."""
    for key in keys:
        if not isinstance(spec, dict) or key not in spec:
            return None
        spec = spec[key]
    return spec


def _mapping(value):
    return value.items() if isinstance(value, dict) else ()


def _address_fields(spec):
    """(path, value, kind) of every address-like field the spec has (missing ones and values
    of the wrong type are the schema check's to report)."""
    yield "supernet", _field(spec, "supernet"), "cidr"
    dns = _field(spec, "upstream_dns")
    for i, a in enumerate(dns if isinstance(dns, list) else []):
        yield f"upstream_dns.{i}", a, "ip"
    for name, n in _mapping(_field(spec, "networks")):
        for key, kind in (("cidr", "cidr"), ("gateway", "ip"), ("dhcp", "range"),
                          ("hosts_from", "ip")):
            yield f"networks.{name}.{key}", _field(n, key), kind
    yield "management.cidr", _field(spec, "management", "cidr"), "cidr"
    yield "management.hosts_from", _field(spec, "management", "hosts_from"), "ip"
    yield "management.outside", _field(spec, "management", "outside"), "ip"
    for key, kind in (("pod_cidr", "cidr"), ("service_cidr", "cidr"), ("api_vip", "ip"),
                      ("metallb_pool", "range")):
        yield f"kubernetes.{key}", _field(spec, "kubernetes", key), kind
    for name, h in _mapping(_field(spec, "ssh_hosts")):
        for net, mac in _mapping(_field(h, "macs")):
            yield f"ssh_hosts.{name}.macs.{net}", mac, "mac"


def _parse_error(value, kind):
    try:
        if kind == "ip":
            IPAddress(value, flags=0)
            if "/" in value or value.count(".") != 3:
                raise AddrFormatError(value)
        elif kind == "cidr":
            net = IPNetwork(value)
            if net.ip != net.network:
                return f"has host bits set; write {net.cidr}"
        elif kind == "range":
            first, sep, last = value.partition("-")
            if not sep:
                return "write a range as first-last, e.g. 192.168.1.50-192.168.1.200"
            if IPAddress(first.strip()) > IPAddress(last.strip()):
                return "the first address is after the last; swap them"
        elif kind == "mac" and not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", value.lower()):
            return "not a MAC address; write it as aa:bb:cc:dd:ee:ff"
    except (AddrFormatError, ValueError, TypeError):
        examples = {"ip": "192.168.1.254", "cidr": "192.168.1.0/24",
                    "range": "192.168.1.50-192.168.1.200"}
        return f"not a valid {'address' if kind == 'ip' else kind}; e.g. {examples[kind]}"
    return None


def address_problems(spec):
    """Problems of the address fields that are text (others are the schema check's)."""
    return [Problem(path, value, err) for path, value, kind in _address_fields(spec)
            if isinstance(value, str) and (err := _parse_error(value, kind))]


def check(plan, source):
    """Raise SpecError with every problem in the plan; keep warnings on plan.warnings."""
    problems = []
    for rule in (_names, _network_layout, _kubernetes_ranges, _dhcp_ranges, _host_addresses,
                 _group_sizes, _resources, _version, _ssh_hosts, _upstream_dns, _outside,
                 _storage):
        problems.extend(rule(plan))
    if problems:
        raise SpecError(source, problems)
    plan.warnings = list(_warnings(plan))
    return plan


def _names(plan):
    if not DNS_LABEL.match(plan.name):
        yield Problem("name", plan.name, "must be a DNS label: lower-case letters, digits, '-'")
    if not all(DNS_LABEL.match(part) for part in plan.domain.split(".")):
        yield Problem("domain", plan.domain, "must be DNS labels joined by dots, e.g. kube.local")
    if len(plan.domain) > 200:
        yield Problem("domain", plan.domain, "at most 200 characters (host FQDNs must fit 253)")
    for net in plan.networks:
        if not NETWORK_NAME.match(net.name):
            yield Problem(f"networks.{net.name}", net.name, "network names are 1-10 lower-case "
                          "letters and digits, starting with a letter (e.g. mast, node)")
    if not all(DNS_LABEL.match(part) for part in plan.dns_domain.split(".")):
        yield Problem("kubernetes.dns_domain", plan.dns_domain,
                      "must be DNS labels joined by dots, e.g. cluster.local")
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", plan.shared_volume_path):
        yield Problem("kubernetes.shared_volume_path", plan.shared_volume_path,
                      "must be an absolute path of plain names, e.g. /mnt/gluster/kube")
    seen = {}
    for host in plan.hosts:
        path = _group_path(plan, host.group)
        if not DNS_LABEL.match(host.name):
            yield Problem(path, host.name, "host names must be DNS labels (lower-case letters, "
                                           "digits and '-', at most 63); change the prefix or name")
        elif len(f"{plan.name}-{host.name}") > MACHINE_NAME_MAX:
            yield Problem(path, host.name, f"with the lab name, '{plan.name}-{host.name}' is "
                          f"longer than {MACHINE_NAME_MAX} characters (a container's machine "
                          "name); shorten the lab name or the prefix")
        if host.name in seen:
            yield Problem(path, host.name, f"host name is also planned by {seen[host.name]}; "
                                           "give the groups different prefixes")
        seen.setdefault(host.name, path)


def _group_path(plan, group):
    return f"hosts.{group}.name" if group == "gateway" else f"hosts.{group}.prefix"


def _network_layout(plan):
    nets = [(f"networks.{n.name}.cidr", n.cidr) for n in plan.networks]
    for path, cidr in nets:
        if cidr not in plan.supernet:
            yield Problem(path, str(cidr), f"lies outside supernet {plan.supernet}; "
                                           "move it inside or widen supernet")
    nets.append(("management.cidr", plan.management))
    for i, (path, cidr) in enumerate(nets):
        for other_path, other in nets[:i]:
            if _overlap(cidr, other):
                yield Problem(path, str(cidr), f"overlaps {other_path} ({other}); "
                                               "give every network its own range")
    for n in plan.networks:
        path = f"networks.{n.name}"
        if not _usable(n.cidr, n.gateway):
            yield Problem(f"{path}.gateway", str(n.gateway),
                          f"must be a usable address inside {n.cidr}")
        elif not _usable(n.cidr, n.host_ip):
            yield Problem(f"{path}.cidr", str(n.cidr), "leaves no free address for the lab "
                          "machine (libvirt holds one on every network); widen the network")


def _overlap(a, b):
    return a.first <= b.last and b.first <= a.last


def _usable(cidr, address):
    return cidr.first < int(address) < cidr.last


def _kubernetes_ranges(plan):
    host_nets = [(f"networks.{n.name}.cidr", n.cidr) for n in plan.networks]
    host_nets.append(("management.cidr", plan.management))
    for key in ("pod_cidr", "service_cidr"):
        cidr = getattr(plan, key)
        for path, net in host_nets:
            if _overlap(cidr, net):
                yield Problem(f"kubernetes.{key}", str(cidr), f"overlaps host network {path} "
                              f"({net}); pick a range no host network uses")
    nodes = len(plan.group("kubernetes"))
    if 2 ** max(NODE_POD_PREFIX - plan.pod_cidr.prefixlen, -1) < nodes:
        need = NODE_POD_PREFIX - (nodes - 1).bit_length()
        yield Problem("kubernetes.pod_cidr", str(plan.pod_cidr), f"too small for {nodes} "
                      f"Kubernetes nodes, each of which takes a /{NODE_POD_PREFIX}; use a "
                      f"/{need} or larger")
    if _overlap(plan.pod_cidr, plan.service_cidr):
        yield Problem("kubernetes.service_cidr", str(plan.service_cidr),
                      f"overlaps kubernetes.pod_cidr ({plan.pod_cidr}); pick separate ranges")
    for key in ("pod_cidr", "service_cidr"):
        if getattr(plan, key).version != 4:
            yield Problem(f"kubernetes.{key}", str(getattr(plan, key)), "must be an IPv4 range "
                          "like the lab's networks (kubelab builds single-stack IPv4 clusters)")
    for n in plan.networks:
        fixed = [(f"networks.{n.name}.gateway", n.gateway),
                 (f"the lab machine's address on {n.name}", n.host_ip)]
        for what, address in fixed:
            if address == plan.api_vip:
                yield Problem("kubernetes.api_vip", str(plan.api_vip), f"is {what}; the VIP "
                              "needs an address of its own")
            if address in plan.metallb_pool:
                yield Problem("kubernetes.metallb_pool", str(plan.metallb_pool),
                              f"contains {address} ({what}); MetalLB would hand it to a Service")
    lb_net = _group_network(plan, "loadbalancers")
    if lb_net and not _usable(lb_net.cidr, plan.api_vip):
        yield Problem("kubernetes.api_vip", str(plan.api_vip), f"must be inside the load "
                      f"balancers' network {lb_net.name} ({lb_net.cidr}), where HAProxy holds it")
    node_net = _group_network(plan, "workers")
    pool = plan.metallb_pool
    if node_net and not (_usable(node_net.cidr, pool.first) and _usable(node_net.cidr, pool.last)):
        yield Problem("kubernetes.metallb_pool", str(pool), f"must be inside the workers' "
                      f"network {node_net.name} ({node_net.cidr}): MetalLB layer 2 answers ARP there")


def _upstream_dns(plan):
    """The gateway's dnsmasq forwards other names upstream: never to itself or into the lab."""
    for i, server in enumerate(plan.upstream_dns):
        inside = [n.name for n in plan.networks if server in n.cidr]
        if server in plan.management:
            inside.append("management")
        if inside or server.is_loopback():
            yield Problem(f"upstream_dns.{i}", str(server), "is inside the lab "
                          f"({', '.join(inside) or 'loopback'}): the gateway's dnsmasq would "
                          "forward to itself; name resolvers outside the lab")


def _outside(plan):
    """The NAT check puts this address on the lab machine's side: a packet to it must leave
    the lab through the gateway's NAT, so it lies in no network the lab routes itself."""
    address = plan.outside
    lab = [(f"networks.{n.name}.cidr", n.cidr) for n in plan.networks]
    lab += [("management.cidr", plan.management), ("kubernetes.pod_cidr", plan.pod_cidr),
            ("kubernetes.service_cidr", plan.service_cidr)]
    inside = [f"{path} ({cidr})" for path, cidr in lab if address in cidr]
    if inside:
        yield Problem("management.outside", str(address), f"lies inside {inside[0]}: pick an "
                      "address outside every lab network, e.g. 198.51.100.1 (RFC 5737)")
    elif any(address in IPNetwork(block) for block in NOT_UNICAST):
        yield Problem("management.outside", str(address), "must be an ordinary unicast "
                      "address (not 0/8, loopback, link-local, multicast or class E), e.g. "
                      "198.51.100.1 (RFC 5737)")


def _group_network(plan, group):
    name = plan.groups[group].network
    return next((n for n in plan.networks if n.name == name), None)


def _reserved(plan, network):
    """(what, address) of every fixed address on a network, DHCP pool excluded."""
    items = [(f"networks.{network.name}.gateway", network.gateway),
             (f"the VM host's address on {network.name}", network.host_ip)]
    items += [(f"host {h.name}", h.nic(network.name).address)
              for h in plan.hosts_on(network.name)]
    if plan.api_vip in network.cidr:
        items.append(("kubernetes.api_vip", plan.api_vip))
    return items


def _dhcp_ranges(plan):
    for n in plan.networks:
        path = f"networks.{n.name}.dhcp"
        if not (_usable(n.cidr, n.dhcp.first) and _usable(n.cidr, n.dhcp.last)):
            yield Problem(path, str(n.dhcp), f"must lie inside its subnet {n.cidr}")
            continue
        for what, address in _reserved(plan, n):
            if address in n.dhcp:
                yield Problem(path, str(n.dhcp), f"contains {address} ({what}); "
                              "shrink the range or move the address out of it")
        if n.dhcp.overlaps(plan.metallb_pool):
            yield Problem(path, str(n.dhcp), f"overlaps kubernetes.metallb_pool "
                          f"({plan.metallb_pool}); the two must not hand out the same address")


def _host_addresses(plan):
    for n in plan.networks:
        hosts = [(f"host {h.name}", h.nic(n.name).address) for h in plan.hosts_on(n.name)]
        fixed = [(f"networks.{n.name}.gateway", n.gateway),
                 (f"the VM host's address on {n.name}", n.host_ip),
                 ("kubernetes.api_vip", plan.api_vip)]
        for what, address in hosts:
            if not _usable(n.cidr, address):
                yield Problem(f"networks.{n.name}.hosts_from", str(n.hosts_from),
                              f"{what} would get {address}, outside {n.cidr}: more hosts than "
                              "the subnet holds from there; lower hosts_from or the count")
                break
            clash = [w for w, a in fixed if a == address]
            if address in plan.metallb_pool:
                clash.append("kubernetes.metallb_pool")
            if clash:
                yield Problem(f"networks.{n.name}.hosts_from", str(n.hosts_from),
                              f"{what} would get {address}, which is {clash[0]}; "
                              "move hosts_from or lower the count")
    hosts_from = str(plan.management_hosts_from)
    for h in plan.hosts:
        if not _usable(plan.management, h.mgmt.address):
            yield Problem("management.hosts_from", hosts_from,
                          f"host {h.name} would get {h.mgmt.address}, outside "
                          f"{plan.management}; lower hosts_from or widen the network")
            break
        if h.mgmt.address == plan.management_host_ip:
            yield Problem("management.hosts_from", hosts_from,
                          f"host {h.name} would get {h.mgmt.address}, the lab machine's own "
                          "address on the management network (its first usable one); start "
                          "hosts_from above it")


def _group_sizes(plan):
    names = {n.name for n in plan.networks}
    for group in ("loadbalancers", "masters", "workers", "storage"):
        net = plan.groups[group].network
        if net not in names:
            yield Problem(f"hosts.{group}.network", net,
                          f"no such network; use one of {', '.join(sorted(names))}")
    if not plan.group("loadbalancers"):
        yield Problem("hosts.loadbalancers.count", 0, "the API's VIP needs a load balancer to "
                      "hold it; set count: 2 (1 works, without failover)")
    masters = len(plan.group("masters"))
    if masters == 0 or masters % 2 == 0:
        yield Problem("hosts.masters.count", masters, "etcd needs an odd number of masters "
                      "(1, 3, 5) to keep quorum; an even count adds no failure tolerance")
    if len(plan.group("storage")) < 3:
        yield Problem("hosts.storage.count", len(plan.group("storage")),
                      "a replica 3 Gluster volume needs at least 3 storage hosts")


def _resources(plan):
    for group, (memory, cpus) in ROLE_MINIMUM.items():
        planned = plan.groups[group]
        if planned.memory < memory:
            yield Problem(f"hosts.{group}.memory", planned.memory,
                          f"{group} need at least {memory} MiB")
        if planned.cpus < cpus:
            yield Problem(f"hosts.{group}.cpus", planned.cpus, f"{group} need at least {cpus}")


def _version(plan):
    if plan.kubernetes_version not in SUPPORTED_KUBERNETES:
        yield Problem("kubernetes.version", plan.kubernetes_version,
                      f"not a supported minor version; use one of {SUPPORTED_KUBERNETES}")


def _ssh_hosts(plan):
    names = {h.name for h in plan.hosts}
    for name in plan.ssh_hosts:
        if name not in names:
            yield Problem(f"ssh_hosts.{name}", name, "not a planned host; use one of the names "
                          "`kubelab plan` lists")


def _storage(plan):
    storage = plan.storage
    hosts = len(plan.group("storage"))
    for name, replica in storage.volumes.items():
        if hosts >= 3 and hosts % replica:   # fewer: reported by _group_sizes
            yield Problem(f"storage.volumes.{name}.replica", replica,
                          f"must divide the number of storage hosts ({hosts}): each host holds "
                          "one brick of every volume; change the replica or hosts.storage.count")
    if storage.kubernetes_volume not in storage.volumes:
        yield Problem("storage.kubernetes_volume", storage.kubernetes_volume,
                      f"not a volume of storage.volumes; use one of "
                      f"{', '.join(storage.volumes)}")


def _warnings(plan):
    if len(plan.group("loadbalancers")) == 1:
        yield ("hosts.loadbalancers.count: one HAProxy host, a one-node cluster: the API VIP "
               f"{plan.api_vip} has nowhere to fail over to; set count: 2 for high availability")
