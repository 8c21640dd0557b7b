"""Jinja2 rendering shared by every artifact kubelab writes from the plan."""
from functools import lru_cache

import jinja2

from kubelab.paths import TEMPLATES


def ruby_string(value):
    """A Ruby string literal: single-quoted, so nothing in it is interpolated or run."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


@lru_cache(maxsize=1)
def environment():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["ruby"] = ruby_string
    return env


def render(template, **context):
    """Render templates/<template> (e.g. 'gateway/dnsmasq.conf.j2')."""
    return environment().get_template(template).render(**context)


def artifacts(plan):
    """Every file kubelab derives from the plan, as {relative path: text}, the files each
    host gets under hosts/<name>/: what `kubelab render` writes and the benchmark times."""
    import json

    from kubelab.diagram import svg
    from kubelab.inventory import GROUPS, group
    from kubelab.secrets import lab_secrets
    from kubelab.table import plan_table
    from kubelab.vagrant import vagrantfile
    from tasks import host_files

    files = {"plan.json": json.dumps(plan.to_dict(), indent=2), "plan.txt": plan_table(plan),
             "network.svg": svg(plan), "Vagrantfile": vagrantfile(plan),
             "inventory.json": json.dumps({g: group(plan, g) for g in GROUPS}, indent=2)}
    secrets = lab_secrets(plan)
    for me in plan.hosts:
        files.update({f"hosts/{me.name}{dest}": text
                      for dest, text in host_files(plan, me, secrets).items()})
    return files
