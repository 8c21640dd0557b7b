"""The address plan: every host, NIC, address, MAC and range, computed from the spec.

This is the only module that computes an address. Everything else (Vagrantfile,
inventory, dnsmasq config, container lab, tests) reads the Plan.
"""
import hashlib
from dataclasses import dataclass, field, fields, is_dataclass

from netaddr import IPAddress, IPNetwork

from kubelab import debian, validate
from kubelab.errors import LabError
from kubelab.spec import SpecError, read_yaml, schema_problems, without_unknown_keys

# Deploy order of the groups; `kubernetes` is masters + workers.
GROUPS = ["gateway", "loadbalancers", "masters", "workers", "storage"]


@dataclass
class IPRange:
    first: IPAddress
    last: IPAddress

    @classmethod
    def parse(cls, text):
        first, _, last = str(text).partition("-")
        return cls(IPAddress(first.strip()), IPAddress(last.strip()))

    def __contains__(self, address):
        return self.first <= IPAddress(address) <= self.last

    def overlaps(self, other):
        return self.first <= other.last and other.first <= self.last

    def __str__(self):
        return f"{self.first}-{self.last}"


@dataclass
class Network:
    name: str
    index: int            # NIC order: internal network i is eth(i+1) on the gateway
    cidr: IPNetwork
    gateway: IPAddress
    dhcp: IPRange
    hosts_from: IPAddress
    host_ip: IPAddress    # the VM host's own address on this network (libvirt)

    @property
    def netmask(self):
        return self.cidr.netmask


@dataclass
class Group:
    name: str
    count: int
    network: str | None   # its hosts' network (None for the gateway: it is on every one)
    cpus: int
    memory: int           # MiB


@dataclass
class Nic:
    network: str          # an internal network name, or "mgmt"
    device: str           # eth0 is management; eth1.. follow in plan order
    address: IPAddress
    prefixlen: int
    mac: str


@dataclass
class Host:
    name: str
    fqdn: str
    group: str
    index: int            # position in the whole fleet; seeds the MACs
    cpus: int
    memory: int           # MiB
    data_disk: int        # GiB, 0 for none
    mgmt: Nic
    nics: list = field(default_factory=list)   # internal NICs, eth1..

    def nic(self, network):
        return next(n for n in self.nics if n.network == network)

    @property
    def address(self):
        """The host's main internal address (the gateway's is on its first network)."""
        return self.nics[0].address


@dataclass
class Storage:
    volumes: dict           # Gluster volume name -> replica count
    kubernetes_volume: str  # the volume every Kubernetes host mounts (at shared_volume_path)
    ping_timeout: int       # seconds (the volumes' network.ping-timeout)


@dataclass
class Plan:
    name: str
    domain: str
    supernet: IPNetwork
    upstream_dns: list
    networks: list
    management: IPNetwork
    management_hosts_from: IPAddress
    management_host_ip: IPAddress   # the lab side of the management network (ssh from here)
    outside: IPAddress              # the NAT check's stand-in for the internet
    groups: dict                    # name -> Group, in deploy order
    hosts: list
    kubernetes_version: str
    pod_cidr: IPNetwork
    service_cidr: IPNetwork
    api_vip: IPAddress
    api_port: int
    api_name: str
    metallb_pool: IPRange
    dns_domain: str             # the cluster's: Services' names end in it
    shared_volume_path: str     # the Gluster mount on every Kubernetes node
    corosync_token_ms: int      # how long the load balancers' cluster waits for a lost node
    stats_port: int             # HAProxy's stats page, on each load balancer's own address
    boxes: dict
    default_provider: str
    ssh_hosts: dict
    storage: Storage
    warnings: list = field(default_factory=list)

    def network(self, name):
        return next(n for n in self.networks if n.name == name)

    def group(self, name):
        if name == "kubernetes":
            return self.group("masters") + self.group("workers")
        return [h for h in self.hosts if h.group == name]

    def host(self, name):
        return next(h for h in self.hosts if h.name == name)

    def hosts_on(self, network):
        """The hosts with a planned address on a network (the gateway's legs left out)."""
        return [h for h in self.hosts
                if h.group != "gateway" and any(n.network == network for n in h.nics)]

    def select(self, names=None):
        """The planned hosts of `names` in plan order (all of them for None)."""
        if names is None:
            return list(self.hosts)
        unknown = [n for n in names if n not in {h.name for h in self.hosts}]
        if unknown:
            raise LabError(f"unknown host(s) {', '.join(unknown)}: the plan has "
                           f"{', '.join(h.name for h in self.hosts)}")
        return [h for h in self.hosts if h.name in names]

    @property
    def gateway(self):
        return self.group("gateway")[0]

    def to_dict(self):
        """The plan as JSON-friendly data."""
        return _plain(self)


def _plain(value):
    """Dataclasses to dicts, addresses and ranges to strings."""
    if isinstance(value, (IPAddress, IPNetwork, IPRange)):
        return str(value)
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def mac_for(lab, host_index, nic_index):
    """Deterministic, locally administered MAC: unique per NIC in a lab, distinct across labs."""
    lab_byte = hashlib.sha256(lab.encode()).digest()[0]
    octets = [0x52, 0x54, lab_byte, nic_index, host_index >> 8 & 0xFF, host_index & 0xFF]
    return ":".join(f"{o:02x}" for o in octets)


def _host_names(spec):
    """(group, name, group spec) for every planned host, in deploy order."""
    for group in GROUPS:
        g = spec["hosts"][group]
        if group == "gateway":
            yield group, g["name"], g
        else:
            for i in range(1, g["count"] + 1):
                yield group, f"{g['prefix']}{i:02d}", g


def _host_ip(cidr, taken, ranges):
    """The lab machine's address on a network (libvirt gives it one on every network it
    makes): the highest usable address that nothing else takes, so that any gateway works."""
    for address in range(cidr.last - 1, cidr.first, -1):
        if address not in taken and not any(r.first <= IPAddress(address) <= r.last
                                            for r in ranges):
            return IPAddress(address)
    return IPAddress(cidr.first)    # a network too small for it; validate says so


def _networks(spec):
    k8s = spec["kubernetes"]
    vip, pool = int(IPAddress(k8s["api_vip"])), IPRange.parse(k8s["metallb_pool"])
    networks = []
    for index, (name, n) in enumerate(spec["networks"].items()):
        cidr = IPNetwork(n["cidr"])
        gateway = IPAddress(n["gateway"])
        dhcp = IPRange.parse(n["dhcp"])
        host_ip = _host_ip(cidr, {int(gateway), vip}, [dhcp, pool])
        networks.append(Network(name, index, cidr, gateway, dhcp,
                                IPAddress(n["hosts_from"]), host_ip))
    return networks


def _groups(spec):
    return {name: Group(name, 1 if name == "gateway" else g["count"], g.get("network"),
                        g["cpus"], g["memory"])
            for name, g in ((name, spec["hosts"][name]) for name in GROUPS)}


def _build_hosts(spec, networks):
    lab = spec["name"]
    mgmt = IPNetwork(spec["management"]["cidr"])
    mgmt_next = int(IPAddress(spec["management"]["hosts_from"]))
    next_address = {n.name: int(n.hosts_from) for n in networks}
    hosts = []
    for index, (group, name, g) in enumerate(_host_names(spec)):
        mgmt_nic = Nic("mgmt", "eth0", IPAddress(mgmt_next + index), mgmt.prefixlen,
                       mac_for(lab, index, 0))
        host = Host(name, f"{name}.{spec['domain']}", group, index, g["cpus"], g["memory"],
                    g.get("data_disk", 0), mgmt_nic)
        if group == "gateway":
            legs = [(n, n.gateway) for n in networks]
        else:
            net = next((n for n in networks if n.name == g["network"]), None)
            if net is None:     # reported by validate; plan the host without internal NIC
                legs = []
            else:
                legs = [(net, IPAddress(next_address[net.name]))]
                next_address[net.name] += 1
        for nic_no, (net, address) in enumerate(legs, start=1):
            mac = spec.get("ssh_hosts", {}).get(name, {}).get("macs", {}).get(net.name)
            host.nics.append(Nic(net.name, f"eth{nic_no}", address, net.cidr.prefixlen,
                                 mac or mac_for(lab, index, nic_no)))
        hosts.append(host)
    return hosts


def build_plan(spec):
    """The Plan for a schema-checked spec. Call validate.check(plan) before using it."""
    networks = _networks(spec)
    k8s = spec["kubernetes"]
    mgmt = IPNetwork(spec["management"]["cidr"])
    return Plan(
        name=spec["name"], domain=spec["domain"], supernet=IPNetwork(spec["supernet"]),
        upstream_dns=[IPAddress(a) for a in spec["upstream_dns"]],
        networks=networks, management=mgmt,
        management_hosts_from=IPAddress(spec["management"]["hosts_from"]),
        management_host_ip=IPAddress(mgmt.first + 1),
        outside=IPAddress(spec["management"]["outside"]), groups=_groups(spec),
        hosts=_build_hosts(spec, networks),
        kubernetes_version=k8s["version"], pod_cidr=IPNetwork(k8s["pod_cidr"]),
        service_cidr=IPNetwork(k8s["service_cidr"]), api_vip=IPAddress(k8s["api_vip"]),
        api_port=k8s["api_port"], api_name=f"api.{spec['domain']}",
        metallb_pool=IPRange.parse(k8s["metallb_pool"]), dns_domain=k8s["dns_domain"],
        shared_volume_path=k8s["shared_volume_path"],
        corosync_token_ms=spec["loadbalancers"]["corosync_token_ms"],
        stats_port=spec["loadbalancers"]["stats_port"],
        boxes=dict(debian.BOXES), default_provider=spec["provider"]["default"],
        ssh_hosts=spec.get("ssh_hosts", {}), storage=_storage(spec["storage"]))


def _storage(storage):
    return Storage({name: v["replica"] for name, v in storage["volumes"].items()},
                   storage["kubernetes_volume"], storage["ping_timeout"])


def load_plan(path):
    """Spec file -> validated Plan. Raises SpecError listing every problem at once: unknown
    keys (typos) together with whatever the rest of the spec gets wrong."""
    typos, spec = without_unknown_keys(read_yaml(path))
    # Shapes and addresses together; the plan's rules need both right to run at all.
    problems = schema_problems(spec) + validate.address_problems(spec)
    if problems:
        raise SpecError(path, typos + problems)
    try:
        plan = validate.check(build_plan(spec), path)
    except SpecError as err:
        raise SpecError(path, typos + err.problems) from None
    if typos:
        raise SpecError(path, typos)
    return plan
