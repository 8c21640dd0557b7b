"""Hostile strings in every string field of a spec are refused before anything is written,
each naming its field; and what reaches a generated file is safe for its language."""
import subprocess

import pytest
import yaml

from kubelab.paths import DEFAULT_SPEC
from kubelab.plan import load_plan
from kubelab.render import ruby_string
from kubelab.spec import SpecError, read_yaml

PAYLOADS = ['x"; system("touch /tmp/kubelab-pwned"); "', "x'; `touch /tmp/kubelab-pwned`; '",
            "../../etc/kubelab", "two\nlines", "with space", "#{`id`}"]
# Existing machines are a part of the spec the default leaves empty: one, to reach its fields.
SSH_HOST = {"gateway": {"address": "192.0.2.10", "user": "root", "key": "/root/.ssh/id",
                        "macs": {"mast": "52:54:00:00:00:01"}}}


def string_fields(data, path=()):
    """(path, value) of every string in the spec, lists and mappings walked."""
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        if isinstance(value, str):
            yield path + (key,), value
        elif isinstance(value, (dict, list)):
            yield from string_fields(value, path + (key,))


def with_value(data, path, value):
    data = yaml.safe_load(yaml.safe_dump(data))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


# A local file name handed to SSH as data, never written in a file's language: any path goes.
ALLOWED = {("ssh_hosts", "gateway", "key"): {"../../etc/kubelab", "with space", "#{`id`}"}}
BASE = {**read_yaml(DEFAULT_SPEC), "ssh_hosts": SSH_HOST}
FIELDS = [path for path, _ in string_fields(BASE)]


def test_the_base_spec_is_valid(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_plan(path).hosts


@pytest.mark.parametrize("field", FIELDS, ids=lambda p: ".".join(map(str, p)))
def test_every_string_field_refuses_hostile_values(field, tmp_path):
    name = ".".join(map(str, field))
    for payload in set(PAYLOADS) - ALLOWED.get(field, set()):
        path = tmp_path / "hostile.yaml"
        path.write_text(yaml.safe_dump(with_value(BASE, field, payload)))
        with pytest.raises(SpecError) as err:
            load_plan(path)
        paths = [p.path for p in err.value.problems]
        # The field (or the list/mapping holding it) is named; a name used as a reference
        # (a group's network) may be reported where it points.
        assert any(name.startswith(p) or p.startswith(name.rsplit(".", 1)[0]) for p in paths), \
            (payload, paths)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_network_names_refuse_hostile_values(payload, tmp_path):
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    spec["networks"] = {payload if k == "dmz" else k: v for k, v in spec["networks"].items()}
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as err:
        load_plan(path)
    assert any(p.path.startswith("networks.") for p in err.value.problems)


@pytest.mark.parametrize("payload", PAYLOADS + ["back\\slash'"])
def test_ruby_literals_carry_any_text_unchanged(payload):
    """What the Vagrantfile's strings are written with: Ruby reads back the same text, and
    runs nothing of it."""
    run = subprocess.run(["ruby", "-e", f"print({ruby_string(payload)})"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == payload, run.stderr
