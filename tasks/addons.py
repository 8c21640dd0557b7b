"""The cluster's add-ons, applied once, from the first master, after every node has joined:
Flannel (pod network), MetalLB (LoadBalancer addresses from the spec's pool), the
Gluster-backed StorageClass (rancher/local-path-provisioner on the shared mount) and
Headlamp (the Dashboard's successor) behind a MetalLB address.

Each comes from its upstream manifest as released, vendored under files/addons/ with its
version, source and sha256 in files/addons/SOURCES.json (the one place add-on versions are
pinned), changed here only where the lab needs it. A manifest is applied only when the
cluster differs from it (`kubectl diff`): a second run changes nothing.
"""
import hashlib
import json

import yaml
from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.server import Command

from kubelab.errors import LabError
from kubelab.paths import REPO
from tasks.control_plane import CONFIGS, KUBECTL
from tasks.helpers import chosen, in_container, put

NAME = "Add-ons"
GROUPS = ("masters",)
PACKAGES = []

VENDORED = REPO / "files" / "addons"
SOURCES = json.loads((VENDORED / "SOURCES.json").read_text())
ADDONS = f"{CONFIGS}/addons"
STORAGE_CLASS = "glusterfs-storage"       # the talk's name
POOL = "kubelab"
HEADLAMP_ACCOUNT = "headlamp-viewer"      # read-only: its token is the Headlamp login
METALLB_WEBHOOK_WAIT = 300                # seconds


def vendored_text(name):
    """A vendored manifest's text, refused if it is not the file SOURCES.json records."""
    source = SOURCES[name]
    data = (VENDORED / source["file"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != source["sha256"]:
        raise LabError(f"files/addons/{source['file']} is not {name} {source['version']} as "
                       f"recorded in files/addons/SOURCES.json; restore it from "
                       f"{source['repository']} (tag {source['version']}, {source['path']})")
    return data.decode()


def vendored(name):
    return [doc for doc in yaml.safe_load_all(vendored_text(name)) if doc]


def _find(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def dump(docs):
    return yaml.safe_dump_all(docs, sort_keys=False)


def flannel(plan):
    """The spec's pod CIDR; flanneld picks the internal NIC on each node by its planned
    address (--iface may repeat: the first one a node holds wins)."""
    docs = vendored("flannel")
    config = _find(docs, "ConfigMap", "kube-flannel-cfg")
    net = json.loads(config["data"]["net-conf.json"])
    net["Network"] = str(plan.pod_cidr)
    config["data"]["net-conf.json"] = json.dumps(net, indent=2) + "\n"
    daemon = _find(docs, "DaemonSet", "kube-flannel-ds")
    flanneld = next(c for c in daemon["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "kube-flannel")
    flanneld["args"] += [f"--iface={h.address}" for h in plan.group("kubernetes")]
    return docs


def metallb_pool(plan):
    """The spec's pool, announced by layer 2 from the workers only: the masters are on
    another network, where an answer to ARP for a pool address reaches nobody."""
    meta = {"name": POOL, "namespace": "metallb-system"}
    return [{"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": meta,
             "spec": {"addresses": [str(plan.metallb_pool)]}},
            {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": meta,
             "spec": {"ipAddressPools": [POOL], "nodeSelectors": [{"matchExpressions": [
                 {"key": "node-role.kubernetes.io/control-plane",
                  "operator": "DoesNotExist"}]}]}}]


def local_path(plan):
    """sharedFileSystemPath mode: one directory per claim on the Gluster mount every node
    has, so a volume is reachable from any node (ReadWriteMany works)."""
    docs = [d for d in vendored("local-path-provisioner") if d["kind"] != "StorageClass"]
    config = _find(docs, "ConfigMap", "local-path-config")
    config["data"]["config.json"] = json.dumps(
        {"sharedFileSystemPath": plan.shared_volume_path, "nodePathMap": []}, indent=2)
    docs.append({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                 "metadata": {"name": STORAGE_CLASS, "annotations": {
                     "storageclass.kubernetes.io/is-default-class": "true"}},
                 "provisioner": "rancher.io/local-path", "reclaimPolicy": "Retain",
                 "volumeBindingMode": "Immediate"})
    return docs


def headlamp_address(plan):
    return str(plan.metallb_pool.first)


def headlamp(plan):
    """Headlamp pinned to its release, on the pool's first address; a read-only account to
    log in with (no long-lived token Secret: `kubelab headlamp-token` makes a short one)."""
    version = SOURCES["headlamp"]["version"]
    docs = [d for d in vendored("headlamp") if d["kind"] != "Secret"]
    service = _find(docs, "Service", "headlamp")
    service["metadata"]["annotations"] = {"metallb.io/loadBalancerIPs": headlamp_address(plan)}
    service["spec"]["type"] = "LoadBalancer"
    container = _find(docs, "Deployment", "headlamp")["spec"]["template"]["spec"]["containers"][0]
    image, _, _ = container["image"].rpartition(":")
    container["image"] = f"{image}:{version}"
    # The manifest traces to a collector the lab does not run.
    env = {"HEADLAMP_CONFIG_TRACING_ENABLED": "false", "HEADLAMP_CONFIG_SERVICE_VERSION": version}
    for var in container["env"]:
        var["value"] = env.get(var["name"], var["value"])
    account = {"kind": "ServiceAccount", "name": HEADLAMP_ACCOUNT, "namespace": "kube-system"}
    reader = f"{HEADLAMP_ACCOUNT}-cluster"
    rbac = "rbac.authorization.k8s.io/v1"
    read = ["get", "list", "watch"]
    docs += [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": HEADLAMP_ACCOUNT, "namespace": "kube-system"}},
        # The built-in `view` role: namespaced objects, Secrets excluded ...
        {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": HEADLAMP_ACCOUNT},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "view"}, "subjects": [account]},
        # ... and the cluster-scoped objects a dashboard shows, read-only.
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": reader},
         "rules": [{"apiGroups": [""], "resources": ["nodes", "namespaces", "persistentvolumes"],
                    "verbs": read},
                   {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"],
                    "verbs": read},
                   {"apiGroups": ["apiextensions.k8s.io"],
                    "resources": ["customresourcedefinitions"], "verbs": read}]},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": reader},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": reader}, "subjects": [account]}]
    return docs


def manifests(plan):
    """{destination: text} in apply order."""
    return {f"{ADDONS}/10-flannel.yaml": dump(flannel(plan)),
            f"{ADDONS}/20-metallb.yaml": vendored_text("metallb"),
            f"{ADDONS}/21-metallb-pool.yaml": dump(metallb_pool(plan)),
            f"{ADDONS}/30-local-path.yaml": dump(local_path(plan)),
            f"{ADDONS}/40-headlamp.yaml": dump(headlamp(plan))}


def files_for(plan, me, secrets):
    return manifests(plan) if me.name == chosen(plan, "masters").name else {}


def deploy(plan, me, secrets):
    if in_container() or me.name != chosen(plan, "masters").name:
        return
    for path, text in manifests(plan).items():
        put(path, text)
        webhook = path.endswith("-metallb-pool.yaml")
        applied(name=f"Apply {path.rpartition('/')[2]}", path=path, webhook=webhook)


@operation()
def applied(path, webhook=False):
    """kubectl apply, when the cluster differs from the manifest. MetalLB's resources wait
    for its controller, then retry (bounded) until its admission webhook answers."""
    same = host.get_fact(Command, command=f"{KUBECTL} diff -f {path} >/dev/null 2>&1; echo $?")
    if same == "0":
        host.noop(f"the cluster has {path}")
        return
    if not webhook:
        yield f"{KUBECTL} apply -f {path}"
        return
    tries = METALLB_WEBHOOK_WAIT // 5
    yield (f"{KUBECTL} -n metallb-system wait --for=condition=Available deployment/controller "
           f"--timeout={METALLB_WEBHOOK_WAIT}s")
    yield (f"for i in $(seq {tries}); do {KUBECTL} apply -f {path} && exit 0; sleep 5; done; "
           f"echo 'MetalLB webhook did not answer in {METALLB_WEBHOOK_WAIT} s' >&2; exit 1")
