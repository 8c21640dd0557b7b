"""The control plane: kubeadm init on the first master, the other masters joined as control
planes, one after another.

Every step is guarded by state: init runs only where no admin.conf exists, a join only where
no kubelet.conf exists, so a second run changes nothing and a lost node joins again. The
bootstrap token and the certificate key are the lab's secrets (kubelab/secrets.py). The
uploaded certificates live 2 h and a token 24 h: while a planned node is missing or not
Ready, the first master makes them again when they have expired. The joining hosts get the cluster CA's hash from the first master
(helpers.publish). The API is reached through the load balancers' VIP, under the API name.
"""
from io import StringIO

import yaml
from pyinfra import host, logger
from pyinfra.api import operation
from pyinfra.facts.server import Command
from pyinfra.operations import files

from kubelab import paths
from kubelab.secrets import write_private
from kubelab.facts import Exists
from tasks.helpers import chosen, in_container, publish, put, shared
from tasks.kubernetes import SOCKET

NAME = "Control plane"
GROUPS = ("masters",)
PACKAGES = []

API_VERSION = "kubeadm.k8s.io/v1beta4"
CONFIGS = "/etc/kubernetes/kubelab"
INIT = f"{CONFIGS}/init.yaml"
JOIN = f"{CONFIGS}/join.yaml"
UPGRADE = f"{CONFIGS}/upgrade.yaml"
PATCHES = f"{CONFIGS}/patches"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"
# CoreDNS on the masters (the talk's layout), kept there across `kubeadm upgrade`.
COREDNS_REPLICAS = 3
TOKEN_TTL = "24h0m0s"
# The sha256 of the cluster CA's public key, as kubeadm's discovery wants it.
CA_HASH = ("openssl x509 -pubkey -noout -in /etc/kubernetes/pki/ca.crt | "
           "openssl pkey -pubin -outform der | sha256sum | cut -d' ' -f1")
CA_HASH_KEY = "kubeadm_ca_hash"


def endpoint(plan):
    return f"{plan.api_name}:{plan.api_port}"


def _doc(kind, **fields):
    return {"apiVersion": API_VERSION, "kind": kind, **fields}


def node_registration(me):
    """The node's name and runtime, and kubelet's node IP: the host's internal address
    (a VM's first NIC is the provider's NAT, the same on every VM)."""
    return {"name": me.name, "criSocket": f"unix://{SOCKET}",
            "kubeletExtraArgs": [{"name": "node-ip", "value": str(me.address)}]}


def cluster_configuration(plan):
    masters = plan.group("masters")
    sans = [str(plan.api_vip), plan.api_name]
    sans += [x for m in masters for x in (m.name, m.fqdn, str(m.address))]
    return _doc("ClusterConfiguration",
                clusterName=plan.name,
                # The newest patch of the spec's minor (kubeadm's own when offline).
                kubernetesVersion=f"stable-{plan.kubernetes_version}",
                controlPlaneEndpoint=endpoint(plan),
                apiServer={"certSANs": sans},
                networking={"podSubnet": str(plan.pod_cidr),
                            "serviceSubnet": str(plan.service_cidr),
                            "dnsDomain": plan.dns_domain})


def init_configuration(plan, me, secrets):
    return _doc("InitConfiguration",
                bootstrapTokens=[{"token": secrets["kubeadm_token"], "ttl": TOKEN_TTL,
                                  "usages": ["signing", "authentication"],
                                  "groups": ["system:bootstrappers:kubeadm:default-node-token"]}],
                certificateKey=secrets["kubeadm_certificate_key"],
                localAPIEndpoint={"advertiseAddress": str(me.address),
                                  "bindPort": plan.api_port},
                nodeRegistration=node_registration(me),
                patches={"directory": PATCHES})


def join_configuration(plan, me, secrets, ca_hash):
    """A master joins as a control plane (with the certificate key), a worker as a node."""
    fields = {"discovery": {"bootstrapToken": {
        "apiServerEndpoint": endpoint(plan), "token": secrets["kubeadm_token"],
        "caCertHashes": [f"sha256:{ca_hash}"]}},
        "nodeRegistration": node_registration(me)}
    if me.group == "masters":
        fields["controlPlane"] = {"localAPIEndpoint": {"advertiseAddress": str(me.address),
                                                       "bindPort": plan.api_port},
                                  "certificateKey": secrets["kubeadm_certificate_key"]}
        fields["patches"] = {"directory": PATCHES}
    return _doc("JoinConfiguration", **fields)


def upgrade_configuration():
    """For `kubeadm upgrade apply|node --config`: the same patches (CoreDNS stays put)."""
    return _doc("UpgradeConfiguration", apply={"patches": {"directory": PATCHES}},
                node={"patches": {"directory": PATCHES}})


def coredns_patch():
    return {"spec": {"replicas": COREDNS_REPLICAS, "template": {"spec": {
        "nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}}}}


def dump(*docs):
    return yaml.safe_dump_all(docs, sort_keys=False)


def files_for(plan, me, secrets):
    """The first master's init config (secrets: mode 0600), every master's upgrade config and
    patches. The join config is written when its host joins: it holds the CA's hash."""
    out = {UPGRADE: dump(upgrade_configuration()),
           f"{PATCHES}/corednsdeployment+strategic.yaml": dump(coredns_patch())}
    if me.name == chosen(plan, "masters").name:
        out[INIT] = dump(init_configuration(plan, me, secrets), cluster_configuration(plan))
    return out


def deploy(plan, me, secrets):
    if in_container():
        return
    first = chosen(plan, "masters")
    for dest, text in files_for(plan, me, secrets).items():
        put(dest, text, mode="0600" if dest == INIT else "0644")
    if me.name == first.name:
        control_plane_up(name="kubeadm init, or fresh join data for the other nodes",
                         token=secrets["kubeadm_token"],
                         masters=[h.name for h in plan.group("masters")],
                         nodes=[h.name for h in plan.group("kubernetes")])
        kubeconfig(name="The lab's kubeconfig (the API name through the VIP)", plan=plan)
    publish(name="Publish the cluster CA's hash", key=CA_HASH_KEY, command=CA_HASH,
            chosen_host=first)
    if me.name != first.name:
        # One at a time: each control-plane join adds an etcd member.
        joined(name="Join as a control-plane node", plan=plan, me=me, secrets=secrets,
               _serial=True)


@operation()
def control_plane_up(token, masters, nodes):
    """kubeadm init --upload-certs where no cluster is. On an initialised first master, while
    a planned node is missing or not Ready (new, or lost and rebuilt), the join data it needs:
    the bootstrap token (24 h) and, for a master, the uploaded certificates (2 h), made again
    when they have expired. A healthy cluster: nothing."""
    if not host.get_fact(Exists, path=ADMIN_CONF):
        yield f"kubeadm init --config {INIT} --upload-certs"
        return
    ready = host.get_fact(Command, command=f"{KUBECTL} get nodes -o jsonpath='{{range .items[*]}}"
                                           "{.metadata.name}={.status.conditions[?(@.type=="
                                           "\"Ready\")].status}{\"\\n\"}{end}' || true") or ""
    ready = {line.partition("=")[0] for line in ready.split() if line.endswith("=True")}
    waiting = [n for n in nodes if n not in ready]
    if not waiting:
        host.noop("every planned node is Ready: no join data needed")
        return
    tokens = host.get_fact(Command, command=f"kubeadm token list --kubeconfig {ADMIN_CONF} "
                                            "-o jsonpath='{.token}{\"\\n\"}' || true") or ""
    if token not in tokens.split():
        yield f"kubeadm token create {token} --ttl {TOKEN_TTL} --kubeconfig {ADMIN_CONF}"
    if set(waiting) & set(masters[1:]):
        certs = host.get_fact(Command, command=f"{KUBECTL} -n kube-system get secret "
                                               "kubeadm-certs -o name --ignore-not-found || true")
        if not certs:
            yield f"kubeadm init phase upload-certs --upload-certs --config {INIT}"
    host.noop(f"join data for {', '.join(waiting)}")


@operation()
def joined(plan, me, secrets):
    """kubeadm join where this host is no node yet (no kubelet.conf): a new host, or one
    that was lost and rebuilt."""
    if host.get_fact(Exists, path=KUBELET_CONF):
        host.noop(f"{me.name} is a node of the cluster")
        return
    config = join_configuration(plan, me, secrets, shared(CA_HASH_KEY))
    role = ("a control plane, with the certificate key" if "controlPlane" in config
            else "a worker")
    logger.info(f"    {host.print_prefix}note: joins {endpoint(plan)} as {role}; the CA's hash "
                f"{config['discovery']['bootstrapToken']['caCertHashes'][0]}")
    text = dump(config)
    yield from files.put._inner(src=StringIO(text), dest=JOIN, user="root", group="root",
                                mode="0600")
    yield f"kubeadm join --config {JOIN}"


def kubeconfig_path(plan):
    return paths.lab_dir(plan) / "kubeconfig"


def user_kubeconfig(plan, admin_conf):
    """admin.conf for this machine: the server is the VIP, the certificate checked against
    the API name (this machine does not use the lab's DNS)."""
    config = yaml.safe_load(admin_conf)
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://{plan.api_vip}:{plan.api_port}"
        cluster["cluster"]["tls-server-name"] = plan.api_name
    return yaml.safe_dump(config, sort_keys=False)


@operation()
def kubeconfig(plan):
    """Fetch admin.conf into the lab's state dir (0600), as `kubectl --kubeconfig` wants it.
    Nothing changes on the host."""
    admin = host.get_fact(Command, command=f"cat {ADMIN_CONF}")
    if admin:
        path = kubeconfig_path(plan)
        text = user_kubeconfig(plan, admin)
        if not path.exists() or path.read_text() != text:
            write_private(path, text)
        host.noop(f"kubeconfig: {path}")
    yield from ()
