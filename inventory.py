"""pyinfra inventory: `pyinfra inventory.py deploy.py`. Every host and its data come from
the plan of the spec in $KUBELAB_SPEC (default kubelab.yaml); SSH details come from the
ssh config `kubelab up` writes, or from the spec's ssh_hosts for existing machines."""
from kubelab.inventory import group
from kubelab.paths import spec_path
from kubelab.plan import load_plan

_plan = load_plan(spec_path())

gateway = group(_plan, "gateway")
loadbalancers = group(_plan, "loadbalancers")
masters = group(_plan, "masters")
workers = group(_plan, "workers")
storage = group(_plan, "storage")
kubernetes = group(_plan, "kubernetes")
