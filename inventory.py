"""pyinfra inventory: `pyinfra inventory.py deploy.py`. Every host and its data come from
the plan of the spec in $KUBELAB_SPEC (default kubelab.yaml); SSH details come from the
ssh config `kubelab up` writes, or from the spec's ssh_hosts for existing machines."""
import sys

from kubelab import sshproxy, stacks
from kubelab.inventory import group, not_up_warning
from kubelab.paths import spec_path
from kubelab.plan import load_plan

sshproxy.install()    # before pyinfra connects: see kubelab/sshproxy.py
stacks.install()      # a deploy stopped for its time says where it waited
_plan = load_plan(spec_path())
# Said before pyinfra tries to connect: its own error for a host that is not up is only
# "Could not resolve hostname".
_warning = not_up_warning(_plan)
if _warning:
    print(_warning, file=sys.stderr)

gateway = group(_plan, "gateway")
loadbalancers = group(_plan, "loadbalancers")
masters = group(_plan, "masters")
workers = group(_plan, "workers")
storage = group(_plan, "storage")
kubernetes = group(_plan, "kubernetes")
