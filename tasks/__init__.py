"""The deploy's stages, one module each, in the lab's build order (deploy.py runs them).

Adding a stage: its module here (see tasks/helpers.py for what a stage module says), its
templates in templates/<stage>/, its checks in tests/hosts/test_<stage>.py, its line below.
"""
from functools import lru_cache

from kubelab.paths import spec_path
from kubelab.plan import load_plan
from kubelab.secrets import lab_secrets
from tasks import (addons, baseline, control_plane, gateway, kubernetes, loadbalancers, network,
                   storage, storage_clients, workers)
from tasks.helpers import applies, stage_files, stage_name

STAGES = [
    baseline,        # every host: name, common packages
    gateway,         # routing, NAT, DNS + DHCP: before any host asks for an address
    network,         # every other host: its internal address from the gateway
    loadbalancers,   # HAProxy + the API's virtual IP
    storage,         # the Gluster pool
    storage_clients, # the Kubernetes hosts' mount of the volume for Kubernetes
    kubernetes,      # the Kubernetes hosts: containerd, kubelet, kubeadm
    control_plane,   # kubeadm init, the other masters join (the API through the VIP)
    workers,         # the workers join
    addons,          # Flannel, MetalLB, the Gluster StorageClass, Headlamp (on the mount)
]


# pyinfra data naming the last stage to run (`pyinfra --data kubelab_until=STAGE`, `kubelab
# provision --until STAGE`): a lab built only so far, e.g. without the Kubernetes stages on
# hosts that cannot reach their package repositories.
UNTIL = "kubelab_until"


def stage_names():
    return [stage_name(s) for s in STAGES]


def stages_until(name=None):
    """STAGES up to and including the one named `name` (every stage for None)."""
    if name is None:
        return STAGES
    if name not in stage_names():
        raise ValueError(f"no deploy stage {name!r}; the stages: {', '.join(stage_names())}")
    return STAGES[:stage_names().index(name) + 1]


def host_files(plan, me, secrets):
    """{destination: content} of every file the deploy writes on host `me`."""
    out = {}
    for stage in STAGES:
        if applies(stage, me):
            out.update(stage_files(stage, plan, me, secrets))
    return out


def stage_packages():
    """{stage name: its Debian packages} of the stages that have some."""
    return {stage_name(s): s.PACKAGES for s in STAGES if s.PACKAGES}


def image_packages():
    """Every stage's packages: the image pre-installs them all (services off)."""
    return sorted({p for packages in stage_packages().values() for p in packages})


@lru_cache(maxsize=1)
def the_lab():
    """(plan, secrets) of the spec in $KUBELAB_SPEC, loaded once: pyinfra executes deploy.py
    once per host."""
    plan = load_plan(spec_path())
    return plan, lab_secrets(plan)
