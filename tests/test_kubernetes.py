"""The Kubernetes stages without a cluster: every rendered object and vendored manifest
against the Kubernetes API schemas of the spec's minor (kubernetes-validate, strict), MetalLB's
resources against its CRDs, the kubeadm configs against a JSON Schema of the v1beta4 fields
kubelab renders, the containerd config parsed as TOML; each check shown to fail on a broken
input. The command plans of the deploy are in tests/test_kubernetes_deploy.py."""
import copy
import hashlib
import json
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kubelab.errors import LabError
from kubelab.paths import DEFAULT_SPEC, REPO
from kubelab.plan import load_plan
from kubelab.secrets import GENERATORS
from kubelab.spec import SUPPORTED_KUBERNETES
from tasks import addons, control_plane, host_files, kubernetes

KUBEADM_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "kubeadm-v1beta4.json")
                            .read_text())
CA_HASH = "a" * 64


@pytest.fixture(scope="module")
def plan():
    return load_plan(DEFAULT_SPEC)


@pytest.fixture(scope="module")
def secrets():
    return {name: make() for name, make in GENERATORS.items()}


def docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


# --- vendored manifests ------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(addons.SOURCES))
def test_vendored_manifest_is_the_recorded_release(name):
    source = addons.SOURCES[name]
    data = (addons.VENDORED / source["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == source["sha256"]
    assert source["version"].startswith("v") and source["repository"].startswith("https://")


def test_a_changed_vendored_manifest_is_refused(monkeypatch):
    changed = copy.deepcopy(addons.SOURCES)
    changed["flannel"]["sha256"] = "0" * 64
    monkeypatch.setattr(addons, "SOURCES", changed)
    with pytest.raises(LabError, match="flannel v0.28.9.*flannel-io/flannel"):
        addons.vendored("flannel")


# --- Kubernetes objects against the API schemas --------------------------------------------

def api_objects(plan):
    """Every built-in-kind object kubelab applies, from the rendered manifests."""
    out = []
    for text in addons.manifests(plan).values():
        out += [d for d in docs(text) if not d["apiVersion"].startswith("metallb.io/")]
    return out


@pytest.mark.parametrize("minor", SUPPORTED_KUBERNETES)
def test_every_applied_object_validates_against_the_api_of_the_minor(plan, minor):
    objects = api_objects(plan)
    assert {o["kind"] for o in objects} >= {"DaemonSet", "CustomResourceDefinition",
                                            "StorageClass", "Deployment", "ClusterRoleBinding"}
    for obj in objects:
        kubernetes_validate.validate(obj, minor, strict=True)


@pytest.mark.parametrize("name", sorted(addons.SOURCES))
def test_every_vendored_manifest_validates_as_released(plan, name):
    for obj in addons.vendored(name):
        kubernetes_validate.validate(obj, plan.kubernetes_version, strict=True)


def test_the_api_schema_check_fails_on_a_broken_object(plan):
    service = next(o for o in api_objects(plan) if o["kind"] == "Service"
                   and o["metadata"]["name"] == "headlamp")
    wrong_field = copy.deepcopy(service)
    wrong_field["spec"]["loadBalancerIPs"] = ["192.168.2.10"]
    list_for_map = copy.deepcopy(service)
    list_for_map["spec"]["selector"] = ["k8s-app=headlamp"]
    for broken in (wrong_field, list_for_map):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, plan.kubernetes_version, strict=True)


def strict(schema):
    """A CRD's openAPIV3Schema as the API server applies it to a client's object: fields it
    does not know are refused (kubectl's strict field validation), not silently pruned."""
    schema = copy.deepcopy(schema)
    if schema.get("type") == "object" and "properties" in schema:
        schema.setdefault("additionalProperties", False)
    for key in ("properties", "patternProperties"):
        for name, sub in schema.get(key, {}).items():
            schema[key][name] = strict(sub)
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    return schema


def crd_schemas():
    """{(apiVersion, kind): schema} of the CRDs in the vendored metallb-native.yaml."""
    out = {}
    for crd in addons.vendored("metallb"):
        if crd["kind"] != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            out[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return out


def check_custom(obj):
    schema = strict(crd_schemas()[(obj["apiVersion"], obj["kind"])])
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    schema = {**schema, "properties": {k: v for k, v in schema["properties"].items()
                                       if k not in ("apiVersion", "kind", "metadata", "status")}}
    jsonschema.validate(body, schema)


def test_metallb_resources_validate_against_the_vendored_crds(plan):
    pool, advertisement = addons.metallb_pool(plan)
    for obj in (pool, advertisement):
        check_custom(obj)
    assert pool["spec"]["addresses"] == [str(plan.metallb_pool)]
    assert advertisement["spec"]["ipAddressPools"] == [pool["metadata"]["name"]]


def test_the_crd_check_fails_on_a_broken_resource(plan):
    pool, advertisement = addons.metallb_pool(plan)
    wrong_field = copy.deepcopy(pool)
    wrong_field["spec"]["adresses"] = wrong_field["spec"].pop("addresses")
    map_for_list = copy.deepcopy(advertisement)
    map_for_list["spec"]["ipAddressPools"] = {"pool": "kubelab"}
    for broken in (wrong_field, map_for_list):
        with pytest.raises(jsonschema.ValidationError):
            check_custom(broken)


# --- what the add-ons say ------------------------------------------------------------------

def test_flannel_uses_the_pod_cidr_and_each_node_internal_address(plan):
    rendered = addons.flannel(plan)
    config = next(d for d in rendered if d["kind"] == "ConfigMap")
    assert json.loads(config["data"]["net-conf.json"])["Network"] == str(plan.pod_cidr)
    daemon = next(d for d in rendered if d["kind"] == "DaemonSet")
    args = daemon["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--iface")] == \
        [f"--iface={h.address}" for h in plan.group("kubernetes")]
    images = {c["image"] for d in rendered if d["kind"] == "DaemonSet"
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {f"ghcr.io/flannel-io/flannel:{addons.SOURCES['flannel']['version']}"}


def test_storage_class_is_the_gluster_mount_shared_by_every_node(plan):
    rendered = addons.local_path(plan)
    config = next(d for d in rendered if d["kind"] == "ConfigMap")
    assert json.loads(config["data"]["config.json"]) == \
        {"sharedFileSystemPath": plan.shared_volume_path, "nodePathMap": []}
    [storage_class] = [d for d in rendered if d["kind"] == "StorageClass"]
    assert storage_class["metadata"]["name"] == "glusterfs-storage"
    assert storage_class["reclaimPolicy"] == "Retain"
    assert storage_class["provisioner"] == "rancher.io/local-path"


def test_headlamp_is_pinned_read_only_and_behind_a_pool_address(plan):
    rendered = addons.headlamp(plan)
    images = [c["image"] for d in rendered if d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]]
    assert images == [f"ghcr.io/headlamp-k8s/headlamp:{addons.SOURCES['headlamp']['version']}"]
    assert not [i for i in images if i.endswith(":latest")]
    service = next(d for d in rendered if d["kind"] == "Service")
    assert service["spec"]["type"] == "LoadBalancer"
    address = service["metadata"]["annotations"]["metallb.io/loadBalancerIPs"]
    assert address in plan.metallb_pool
    assert not [d for d in rendered if d["kind"] == "Secret"]     # no long-lived token
    roles = {d["roleRef"]["name"] for d in rendered if d["kind"] == "ClusterRoleBinding"}
    assert "cluster-admin" not in roles and "view" in roles
    for role in (d for d in rendered if d["kind"] == "ClusterRole"):
        assert {v for rule in role["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}


# --- kubeadm configs -------------------------------------------------------------------------

def check_kubeadm(doc):
    schema = {**KUBEADM_SCHEMA, "$ref": f"#/$defs/{doc.get('kind')}"}
    jsonschema.validate(doc, schema)


def kubeadm_docs(plan, secrets):
    first, *others = plan.group("masters")
    init = host_files(plan, first, secrets)[control_plane.INIT]
    out = docs(init)
    out += [control_plane.join_configuration(plan, h, secrets, CA_HASH)
            for h in [*others, *plan.group("workers")]]
    out += docs(host_files(plan, first, secrets)[control_plane.UPGRADE])
    return out


def test_kubeadm_configs_validate_against_v1beta4(plan, secrets):
    rendered = kubeadm_docs(plan, secrets)
    assert {d["kind"] for d in rendered} == {"InitConfiguration", "ClusterConfiguration",
                                             "JoinConfiguration", "UpgradeConfiguration"}
    for doc in rendered:
        check_kubeadm(doc)


def test_kubeadm_configs_say_what_the_plan_says(plan, secrets):
    first = plan.group("masters")[0]
    init, cluster = docs(host_files(plan, first, secrets)[control_plane.INIT])
    assert cluster["controlPlaneEndpoint"] == f"{plan.api_name}:{plan.api_port}"
    assert {str(plan.api_vip), plan.api_name} | {m.name for m in plan.group("masters")} <= \
        set(cluster["apiServer"]["certSANs"])
    assert cluster["networking"] == {"podSubnet": str(plan.pod_cidr),
                                     "serviceSubnet": str(plan.service_cidr),
                                     "dnsDomain": plan.dns_domain}
    assert init["nodeRegistration"]["kubeletExtraArgs"] == \
        [{"name": "node-ip", "value": str(first.address)}]
    assert init["bootstrapTokens"][0]["token"] == secrets["kubeadm_token"]
    assert init["certificateKey"] == secrets["kubeadm_certificate_key"]
    master, worker = plan.group("masters")[1], plan.group("workers")[0]
    joins = {h.group: control_plane.join_configuration(plan, h, secrets, CA_HASH)
             for h in (master, worker)}
    assert joins["masters"]["controlPlane"]["certificateKey"] == \
        secrets["kubeadm_certificate_key"]
    assert joins["masters"]["controlPlane"]["localAPIEndpoint"]["advertiseAddress"] == \
        str(master.address)
    assert "controlPlane" not in joins["workers"]
    assert joins["workers"]["discovery"]["bootstrapToken"]["caCertHashes"] == \
        [f"sha256:{CA_HASH}"]


def test_the_coredns_patch_keeps_coredns_on_the_masters(plan, secrets):
    first = plan.group("masters")[0]
    patch = yaml.safe_load(host_files(plan, first, secrets)[
        f"{control_plane.PATCHES}/corednsdeployment+strategic.yaml"])
    assert patch["spec"]["replicas"] == 3
    assert patch["spec"]["template"]["spec"]["nodeSelector"] == \
        {"node-role.kubernetes.io/control-plane": ""}


def broken_kubeadm(plan, secrets):
    init, cluster = docs(host_files(plan, plan.group("masters")[0], secrets)[control_plane.INIT])
    wrong_field = copy.deepcopy(cluster)
    wrong_field["networking"]["podCIDR"] = wrong_field["networking"].pop("podSubnet")
    v1beta3 = copy.deepcopy(cluster)      # v1beta3's timeout, moved to timeouts in v1beta4
    v1beta3["apiServer"]["timeoutForControlPlane"] = "4m0s"
    old_version = {**copy.deepcopy(init), "apiVersion": "kubeadm.k8s.io/v1beta3"}
    map_for_list = copy.deepcopy(init)    # v1beta3's map form of the extra args
    map_for_list["nodeRegistration"]["kubeletExtraArgs"] = {"node-ip": "192.168.1.11"}
    list_for_map = copy.deepcopy(cluster)
    list_for_map["networking"] = [{"podSubnet": str(plan.pod_cidr)}]
    return {"wrong field": wrong_field, "v1beta3 field": v1beta3,
            "v1beta3 apiVersion": old_version, "map for a list": map_for_list,
            "list for a map": list_for_map}


@pytest.mark.parametrize("case", ["wrong field", "v1beta3 field", "v1beta3 apiVersion",
                                  "map for a list", "list for a map"])
def test_the_kubeadm_check_fails_on_a_broken_config(plan, secrets, case):
    with pytest.raises(jsonschema.ValidationError):
        check_kubeadm(broken_kubeadm(plan, secrets)[case])


# --- containerd ------------------------------------------------------------------------------

CRI = "io.containerd.cri.v1.runtime"


def check_containerd(text, containerd):
    """The keys containerd of that minor reads: its config version, the 2.x CRI plugins'
    sections (a 1.x section would be silently ignored), systemd cgroups, the pause image."""
    config = tomllib.loads(text)
    assert config["version"] == kubernetes.containerd_config_version(containerd)
    assert set(config["plugins"]) == {"io.containerd.cri.v1.images", CRI}
    runc = config["plugins"][CRI]["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is True
    return config


@pytest.mark.parametrize("containerd, version", [("2.0", 3), ("2.2", 3), ("2.3", 4)])
def test_containerd_config_for_its_version(plan, containerd, version):
    config = check_containerd(kubernetes.containerd_config(plan, containerd), containerd)
    assert config["version"] == version
    assert config["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == \
        f"registry.k8s.io/pause:{kubernetes.PAUSE[plan.kubernetes_version]}"
    assert config["grpc"]["address"] == kubernetes.SOCKET


def test_the_containerd_check_fails_on_a_broken_config(plan):
    text = kubernetes.containerd_config(plan)
    broken = {
        "1.x section": text.replace(CRI, "io.containerd.grpc.v1.cri"),
        "wrong version": text.replace("version = 4", "version = 2"),
        "cgroupfs": text.replace("SystemdCgroup = true", "SystemdCgroup = false"),
        "not TOML": text.replace('[grpc]', '[grpc'),
    }
    for case, bad in broken.items():
        with pytest.raises((AssertionError, tomllib.TOMLDecodeError)):
            check_containerd(bad, kubernetes.CONTAINERD)
            pytest.fail(case)   # never reached when the check refuses it


def test_apt_sources_and_pins_follow_the_spec(plan, secrets):
    files = host_files(plan, plan.group("workers")[0], secrets)
    sources = files[kubernetes.KUBERNETES_SOURCES]
    assert f"URIs: https://pkgs.k8s.io/core:/stable:/v{plan.kubernetes_version}/deb/" in sources
    assert "Suites: /" in sources
    assert f"Signed-By: /etc/apt/keyrings/kubernetes-v{plan.kubernetes_version}.asc" in sources
    pins = files[kubernetes.PREFERENCES]
    assert f"Pin: version {plan.kubernetes_version}.*" in pins
    assert f"Pin: version {kubernetes.CONTAINERD}.*" in pins
    assert set(kubernetes.PAUSE) == set(SUPPORTED_KUBERNETES)


# --- the user's kubeconfig ---------------------------------------------------------------------

ADMIN_CONF = """apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: Q0E=
    server: https://api.kube.local:6443
  name: kubelab
contexts:
- context: {cluster: kubelab, user: kubernetes-admin}
  name: kubernetes-admin@kubelab
current-context: kubernetes-admin@kubelab
users:
- name: kubernetes-admin
  user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}
"""


def test_the_user_kubeconfig_reaches_the_api_name_through_the_vip(plan):
    config = yaml.safe_load(control_plane.user_kubeconfig(plan, ADMIN_CONF))
    [cluster] = config["clusters"]
    assert cluster["cluster"]["server"] == f"https://{plan.api_vip}:{plan.api_port}"
    assert cluster["cluster"]["tls-server-name"] == plan.api_name
    assert cluster["cluster"]["certificate-authority-data"] == "Q0E="
    assert config["users"] == yaml.safe_load(ADMIN_CONF)["users"]


def test_kubeconfig_command_says_when_there_is_none_yet(tmp_path):
    import os
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-m", "kubelab", "kubeconfig"], cwd=REPO,
                         env={**os.environ, "KUBELAB_STATE": str(tmp_path)},
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "no kubeconfig" in run.stderr and "kubelab provision" in run.stderr
