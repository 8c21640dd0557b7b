"""The workers join the cluster (after every master is in): kubeadm join as a node, where
no kubelet.conf exists yet, so a second run changes nothing and a lost worker joins again.
The join data comes from the first master (tasks/control_plane.py)."""
from tasks.control_plane import joined
from tasks.helpers import in_container

NAME = "Workers"
GROUPS = ("workers",)
PACKAGES = []


def files_for(plan, me, secrets):
    return {}


def deploy(plan, me, secrets):
    if not in_container():
        joined(name="Join as a worker node", plan=plan, me=me, secrets=secrets)
