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

