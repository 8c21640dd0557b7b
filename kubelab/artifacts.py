"""Every file kubelab derives from the plan, rendered offline: what `kubelab render` writes
and the scale benchmark times."""
import json

from kubelab.diagram import svg
from kubelab.inventory import GROUPS, group
from kubelab.secrets import lab_secrets
from kubelab.table import plan_table
from kubelab.vagrant import vagrantfile
from tasks import host_files


def artifacts(plan):
    """{relative path: text} of every derived file, the files each host gets under
    hosts/<name>/."""
    files = {"plan.json": json.dumps(plan.to_dict(), indent=2), "plan.txt": plan_table(plan),
             "network.svg": svg(plan), "Vagrantfile": vagrantfile(plan),
             "inventory.json": json.dumps({g: group(plan, g) for g in GROUPS}, indent=2)}
    secrets = lab_secrets(plan)
    for me in plan.hosts:
        files.update({f"hosts/{me.name}{dest}": text
                      for dest, text in host_files(plan, me, secrets).items()})
    return files
