"""tests/test_kubernetes_rehearsal.py's deploy: the Kubernetes stages that drive kubeadm and
kubectl (control plane, workers, add-ons), exactly as deploy.py runs them, on containers whose
stand-in kubeadm and kubectl the test installed (tests/standins/). Only here is the stages'
container skip lifted; the package stage (it needs the internet) stays out."""
from pyinfra import host

from tasks import addons, control_plane, the_lab, workers
from tasks.helpers import run_stages

STAGES = [control_plane, workers, addons]
for stage in STAGES:
    stage.in_container = lambda: False

plan, secrets = the_lab()
me = next(h for h in plan.hosts if h.fqdn == host.data.fqdn)
run_stages(STAGES, plan, me, secrets)
