"""Read a spec file: YAML, optionally `extends:` another spec, checked against the schema.

Only shapes and types are checked here; what the values mean together (overlaps,
ranges, counts) is checked on the address plan, in validate.py.
"""
import copy
import difflib
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

SUPPORTED_KUBERNETES = ["1.35", "1.36", "1.37"]

_ip = {"type": "string"}
_range = {"type": "string", "description": "first-last"}
_size = {"type": "integer", "minimum": 1}


def _obj(required, optional=()):
    props = dict(required)
    props.update(optional)
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": False}


_group = _obj({"prefix": {"type": "string"}, "count": {"type": "integer", "minimum": 0},
               "network": {"type": "string"}, "cpus": _size, "memory": _size},
              {"data_disk": _size})

SCHEMA = _obj({
    "name": {"type": "string"},
    "domain": {"type": "string"},
    "supernet": _ip,
    "upstream_dns": {"type": "array", "items": _ip, "minItems": 1},
    "networks": {"type": "object", "minProperties": 1, "additionalProperties": _obj(
        {"cidr": _ip, "gateway": _ip, "dhcp": _range, "hosts_from": _ip})},
    "management": _obj({"cidr": _ip, "hosts_from": _ip}),
    "hosts": _obj({
        "gateway": _obj({"name": {"type": "string"}, "cpus": _size, "memory": _size}),
        "loadbalancers": _group, "masters": _group, "workers": _group, "storage": _group}),
    "kubernetes": _obj({
        "version": {"type": "string"}, "pod_cidr": _ip, "service_cidr": _ip,
        "api_vip": _ip, "api_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "metallb_pool": _range}),
    "storage": _obj({
        # Gluster volumes by name: replica sets across the storage hosts, in host order.
        "volumes": {"type": "object", "minProperties": 1, "additionalProperties": _obj(
            {"replica": {"type": "integer", "minimum": 2}})},
        "kubernetes_volume": {"type": "string"}, "mount_root": {"type": "string"},
        "ping_timeout": {"type": "integer", "minimum": 1, "maximum": 1800}}),
    "provider": _obj({"default": {"enum": ["virtualbox", "libvirt", "nspawn"]},
                      "boxes": _obj({"virtualbox": {"type": "string"},
                                     "libvirt": {"type": "string"}})}),
}, {"extends": {"type": "string"}, "ssh_hosts": {
    # Existing machines (bare metal) reached over SSH: host name -> ssh address.
    "type": "object", "additionalProperties": _obj(
        {"address": _ip}, {"user": {"type": "string"}, "port": {"type": "integer"},
                           "key": {"type": "string"},
                           # network name -> the real NIC's MAC, for its DHCP reservation
                           "macs": {"type": "object", "additionalProperties": _ip}})}})


@dataclass(frozen=True)
class Problem:
    path: str     # dotted field path in the spec, e.g. networks.mast.cidr
    value: object
    message: str  # what is wrong and what would fix it

    def __str__(self):
        return f"{self.path}: {self.message} (got {self.value!r})"


class SpecError(Exception):
    """Every problem found in a spec, reported at once."""

    def __init__(self, source, problems):
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {len(self.problems)} problem(s); nothing was changed."]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


def _merge(base, override):
    """Deep-merge mappings; anything else in `override` replaces the base value."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base.get(key), value) if key in base else value
    return merged


def read_yaml(path, seen=()):
    path = Path(path).resolve()
    if path in seen:
        raise SpecError(path, [Problem("extends", str(path), "spec files extend each other in "
                                       "a loop; remove one `extends:`")])
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(path, [Problem("(file)", str(path), "no such spec file; pass an existing "
                                       "file with --spec, or copy kubelab.yaml")]) from None
    except yaml.YAMLError as err:
        raise SpecError(path, [Problem("(file)", str(path), f"not valid YAML: {err}")]) from None
    if not isinstance(data, dict):
        raise SpecError(path, [Problem("(file)", type(data).__name__,
                                       "a spec is a YAML mapping of keys such as name, networks")])
    if "extends" in data:
        base = read_yaml(path.parent / str(data["extends"]), seen + (path,))
        data = _merge(base, {k: v for k, v in data.items() if k != "extends"})
    return data


def _describe(error):
    """Turn a jsonschema error into Problems naming the field and the fix."""
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(allowed)}"
            path = key if where == "(top level)" else f"{where}.{key}"
            problems.append(Problem(path, error.instance[key], f"unknown key; {hint}"))
        return problems
    if error.validator == "required":
        missing = error.message.split("'")[1]
        path = missing if where == "(top level)" else f"{where}.{missing}"
        return [Problem(path, None, "missing; add it (see kubelab.yaml for an example)")]
    if error.validator == "type":
        return [Problem(where, error.instance, f"must be of type {error.validator_value}")]
    if error.validator == "enum":
        return [Problem(where, error.instance, f"must be one of {error.validator_value}")]
    return [Problem(where, error.instance, error.message)]


def check_schema(data, source="spec"):
    problems = []
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        problems.extend(_describe(error))
    if problems:
        raise SpecError(source, problems)
    return data


def without_unknown_keys(data):
    """(problems, spec): the unknown keys (typos) as Problems, and a copy of the spec without
    them, so that the rest of the spec can still be checked and the user sees every problem
    at once."""
    spec = copy.deepcopy(data)
    problems = []
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
            continue
        problems.extend(_describe(error))
        parent = spec
        for key in error.absolute_path:
            parent = parent[key]
        for key in set(error.instance) - set(error.schema.get("properties", {})):
            del parent[key]
    return problems, spec
