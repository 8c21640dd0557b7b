"""The deploy, in stage order: `pyinfra inventory.py deploy.py` (or `kubelab provision`).

Stages still to come, in this order: load balancers, storage, control plane, workers, add-ons.
"""
from pyinfra import host

from tasks import common, gateway, the_plan

plan = the_plan()
me = next(h for h in plan.hosts if h.fqdn == host.data.fqdn)

common.baseline(plan, me)
if me.group == "gateway":
    gateway.configure(plan, me)
# Every host, the gateway too, registers this stage from this one line: pyinfra orders ops
# only along each host's own sequence, so this shared stage is what holds every other host's
# DHCP until the gateway stage above has finished (ops of disjoint host sets interleave).
common.internal_networks(plan, me)
