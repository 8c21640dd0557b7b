"""The Kubernetes cluster, checked on a running lab (VMs or existing hosts): the runtime and
packages on every node, then, from the first master, every node Ready, CoreDNS only on the
masters, pod-to-pod traffic across workers, a LoadBalancer address from the pool that
answers, a Gluster-backed claim shared by pods on two nodes, Headlamp answering.

Containers do not run Kubernetes (the stage says so when it skips them), and a lab whose API
does not answer cannot show a cluster: there these checks skip, with the reason."""
import json
import time

import pytest
import yaml

from tasks import addons, kubernetes
from tasks.control_plane import ADMIN_CONF, COREDNS_REPLICAS

KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"
NAMESPACE = "kubelab-check"
IMAGE = "docker.io/library/busybox:1.37"     # its httpd serves the checks' pages
WAIT = 180                                   # seconds for a pod, a claim, an address


def in_container(host):
    return host.run("systemd-detect-virt --container").rc == 0


@pytest.fixture
def node(kube_host, connect):
    """A Kubernetes node's testinfra host; skips on a container."""
    host = connect(kube_host)
    if in_container(host):
        pytest.skip(f"{kube_host.name} is a container: the Kubernetes stages skip containers")
    return host


@pytest.fixture(scope="module")
def cluster(first_master, connect):
    """kubectl(args) on the first master, as cluster admin; skips where no API answers."""
    first = first_master        # the master the stages run their once-only steps on
    host = connect(first)
    ready = host.run(f"{KUBECTL} get --raw /readyz")
    if ready.rc != 0:
        pytest.skip(f"no Kubernetes API answers on {first.name} ({ready.stderr.strip()[:120]}"
                    "): a container lab, or a lab not provisioned on VMs or hosts")

    def kubectl(args, stdin=None, check=True):
        command = f"{KUBECTL} {args}"
        if stdin is not None:
            command += f" <<'KUBELAB_EOF'\n{stdin}\nKUBELAB_EOF"
        result = host.run(command)
        if check:
            assert result.rc == 0, f"kubectl {args}: {result.stderr.strip()}"
        return result.stdout
    kubectl.host = host
    return kubectl


@pytest.fixture(scope="module")
def scratch(cluster):
    """A namespace of the checks' own, removed afterwards (with the volumes it made)."""
    cluster(f"create namespace {NAMESPACE}")
    yield NAMESPACE
    volumes = cluster(f"-n {NAMESPACE} get pvc -o jsonpath='{{.items[*].spec.volumeName}}'",
                      check=False).split()
    cluster(f"delete namespace {NAMESPACE} --wait=true --timeout={WAIT}s", check=False)
    for volume in volumes:      # Retain keeps them: the checks' own go
        cluster(f"delete pv {volume} --wait=false", check=False)


def apply(cluster, *docs):
    cluster("apply -f -", stdin=yaml.safe_dump_all(docs))


def wait(cluster, what, condition):
    cluster(f"-n {NAMESPACE} wait {what} --for='{condition}' --timeout={WAIT}s")


def web_pod(name, node_name, claim=None, command="echo kubelab > /www/index.html"):
    """A busybox pod on `node_name` serving /www over HTTP on 8080, after `command`."""
    spec = {"nodeName": node_name,
            "tolerations": [{"key": "node-role.kubernetes.io/control-plane",
                             "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "web", "image": IMAGE, "ports": [{"containerPort": 8080}],
                            "command": ["sh", "-c", f"mkdir -p /www && {command} && "
                                        "exec httpd -f -p 8080 -h /www"],
                            "volumeMounts": [{"name": "data", "mountPath": "/www"}] if claim
                            else []}]}
    if claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": name}}}


# --- every node ------------------------------------------------------------------------------

def test_runtime_and_pinned_packages(node, plan):
    assert node.service("containerd").is_running
    config = node.file(kubernetes.CONTAINERD_CONFIG).content_string
    assert f"version = {kubernetes.containerd_config_version(kubernetes.CONTAINERD)}" in config
    assert node.run(f"crictl --config {kubernetes.CRICTL} info").rc == 0
    assert node.service("kubelet").is_enabled
    held = node.run("apt-mark showhold").stdout.split()
    assert set(kubernetes.PINNED) <= set(held)
    assert node.run("dpkg-query -W -f '${Version}' kubeadm").stdout.startswith(
        plan.kubernetes_version + ".")
    assert node.file("/proc/swaps").content_string.strip().count("\n") == 0, "swap in use"


# --- the cluster -----------------------------------------------------------------------------

def test_every_node_is_ready_at_its_planned_address(cluster, plan):
    nodes = {n["metadata"]["name"]: n for n in json.loads(cluster("get nodes -o json"))["items"]}
    assert set(nodes) == {h.name for h in plan.group("kubernetes")}
    for host in plan.group("kubernetes"):
        status = nodes[host.name]["status"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", f"{host.name}: {ready.get('message')}"
        internal = [a["address"] for a in status["addresses"] if a["type"] == "InternalIP"]
        assert internal == [str(host.address)], host.name


def test_coredns_runs_only_on_the_masters(cluster, plan):
    pods = json.loads(cluster("-n kube-system get pods -l k8s-app=kube-dns -o json"))["items"]
    assert len(pods) == COREDNS_REPLICAS
    assert {p["spec"]["nodeName"] for p in pods} <= {h.name for h in plan.group("masters")}


def test_a_pod_on_one_worker_reaches_a_pod_on_the_other(cluster, scratch, plan):
    workers = plan.group("workers")
    if len(workers) < 2:
        pytest.skip(f"one worker in this lab ({workers[0].name}): pod traffic between "
                    "workers needs two")
    apply(cluster, web_pod("check-a", workers[0].name), web_pod("check-b", workers[1].name))
    wait(cluster, "pod/check-a pod/check-b", "condition=Ready")
    address = cluster(f"-n {scratch} get pod check-a -o jsonpath='{{.status.podIP}}'").strip()
    assert address in plan.pod_cidr
    page = cluster(f"-n {scratch} exec check-b -- wget -qO- -T 5 http://{address}:8080/")
    assert page.strip() == "kubelab"


def test_a_load_balancer_service_gets_a_pool_address_that_answers(cluster, scratch, plan):
    worker = plan.group("workers")[0]
    apply(cluster, web_pod("check-lb", worker.name),
          {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "check-lb", "namespace": scratch},
           "spec": {"type": "LoadBalancer", "selector": {"app": "check-lb"},
                    "ports": [{"port": 80, "targetPort": 8080}]}})
    wait(cluster, "pod/check-lb", "condition=Ready")
    wait(cluster, "service/check-lb", "jsonpath={.status.loadBalancer.ingress[0].ip}")
    address = cluster(f"-n {scratch} get service check-lb "
                      "-o jsonpath='{.status.loadBalancer.ingress[0].ip}'").strip()
    assert address in plan.metallb_pool
    # From the first master: across the gateway, to the address MetalLB answers ARP for.
    page = cluster.host.run(f"curl -fsS --max-time 5 --retry 10 --retry-all-errors "
                            f"http://{address}/")
    assert page.rc == 0 and page.stdout.strip() == "kubelab", page.stderr


def test_a_gluster_claim_binds_and_two_nodes_share_its_data(cluster, scratch, plan):
    writer, reader = plan.group("workers")[0], plan.group("masters")[0]
    apply(cluster, {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "check-shared", "namespace": scratch},
                    "spec": {"storageClassName": addons.STORAGE_CLASS,
                             "accessModes": ["ReadWriteMany"],
                             "resources": {"requests": {"storage": "16Mi"}}}})
    wait(cluster, "pvc/check-shared", "jsonpath={.status.phase}=Bound")
    stamp = f"written on {writer.name} at {time.time():.0f}"
    apply(cluster, web_pod("check-writer", writer.name, "check-shared",
                           f"echo '{stamp}' > /www/index.html"))
    wait(cluster, "pod/check-writer", "condition=Ready")
    apply(cluster, web_pod("check-reader", reader.name, "check-shared", "true"))
    wait(cluster, "pod/check-reader", "condition=Ready")
    read = cluster(f"-n {scratch} exec check-reader -- cat /www/index.html")
    assert read.strip() == stamp


def test_headlamp_answers_on_its_pool_address(cluster, plan):
    address = addons.headlamp_address(plan)
    service = json.loads(cluster("-n kube-system get service headlamp -o json"))
    assert [i["ip"] for i in service["status"]["loadBalancer"].get("ingress", [])] == [address]
    page = cluster.host.run(f"curl -fsS --max-time 5 -o /dev/null -w '%{{http_code}}' "
                            f"http://{address}/")
    assert page.stdout.strip() == "200", page.stderr
