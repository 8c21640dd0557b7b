"""The deploy: `pyinfra inventory.py deploy.py` (or `kubelab provision`) runs every stage of
tasks.STAGES, in the lab's build order, on each host it applies to; with `--data
kubelab_until=STAGE` (`kubelab provision --until STAGE`) only the stages up to that one."""
from pyinfra import host

from tasks import UNTIL, stages_until, the_lab
from tasks.helpers import run_stages

plan, secrets = the_lab()
me = next(h for h in plan.hosts if h.fqdn == host.data.fqdn)
run_stages(stages_until(host.data.get(UNTIL)), plan, me, secrets)
