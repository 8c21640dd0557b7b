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
# Where hosts can run (kubelab.providers): Vagrant's VMs or systemd-nspawn containers.
PROVIDERS = ["virtualbox", "libvirt", "nspawn"]
# Keys older specs had, with what replaced them.
REMOVED = {"provider.boxes": "the boxes follow the image's Debian release (kubelab/debian.py); "
                             "remove this key"}

_ip = {"type": "string"}
# Identifiers written into generated files (Vagrantfile, configs, names of bridges, files,
# libvirt objects): a strict pattern each, with the fix in the field's own words.
_user = {"type": "string", "pattern": r"^[a-z_][a-z0-9_-]{0,31}$",
         "description": "a Unix user name: lower-case letters, digits, '_', '-'"}
_file = {"type": "string", "pattern": r"^[^\x00-\x1f'\"\\]+$",
         "description": "a file path without quotes, backslashes or control characters"}
_ssh_address = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$",
                "description": "an IP address or a DNS name"}
_mac = {"type": "string", "pattern": r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$",
        "description": "a MAC address in lower case, e.g. 52:54:00:12:34:56"}
_volume = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_-]{0,63}$",
           "description": "a Gluster volume name: a letter, then letters, digits, '_', '-'"}
_range = {"type": "string", "description": "first-last"}
_size = {"type": "integer", "minimum": 1}


def _obj(required, optional=()):
    props = dict(required)
    props.update(optional)
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": False}


# Caps checked before any host is planned: a typo of a count must not plan a million hosts.
MAX_COUNT = 2000
MAX_FILE_BYTES = 1 << 20
MAX_ALIASES = 100
SHOWN_CHARS = 40

def _doc(title, schema):
    """`schema` with the field's meaning (the spec reference, docs/spec.md, shows it)."""
    return {**schema, "title": title}


_group = _obj({"prefix": _doc("host names are the prefix and two digits (hapx01)",
                              {"type": "string"}),
               "count": _doc("how many hosts", {"type": "integer", "minimum": 0,
                                                "maximum": MAX_COUNT}),
               "network": _doc("the internal network their NIC is on", {"type": "string"}),
               "cpus": _doc("vCPUs per host", _size),
               "memory": _doc("MiB of memory per host", _size)},
              {"data_disk": _doc("GiB of the data disk (Gluster bricks; VMs only)", _size)})

SCHEMA = _obj({
    "name": _doc("the lab's name: prefixes VM, network, namespace and container names",
                 {"type": "string"}),
    "domain": _doc("the lab's DNS domain, served by the gateway", {"type": "string"}),
    "supernet": _doc("every internal network lies inside it", _ip),
    "upstream_dns": _doc("resolvers the gateway forwards names outside the lab to",
                         {"type": "array", "items": _ip, "minItems": 1}),
    "networks": _doc("internal networks by name, in NIC order", {
        "type": "object", "minProperties": 1, "additionalProperties": _obj({
            "cidr": _doc("its subnet", _ip),
            "gateway": _doc("the gateway's address on it", _ip),
            "dhcp": _doc("the dynamic DHCP pool", _range),
            "hosts_from": _doc("planned hosts' reservations count up from here", _ip)})}),
    "management": _doc("the provider's management network (eth0, SSH only)", _obj({
        "cidr": _doc("its subnet", _ip),
        "hosts_from": _doc("containers' management addresses count up from here", _ip),
        "outside": _doc("the stand-in for the internet in the NAT check: an address outside "
                        "every lab network, held on the lab machine's side only while the "
                        "check runs (a documentation address, RFC 5737)", _ip)})),
    "hosts": _doc("host groups, in deploy order", _obj({
        "gateway": _obj({"name": _doc("the gateway's host name", {"type": "string"}),
                         "cpus": _doc("vCPUs", _size), "memory": _doc("MiB of memory", _size)}),
        "loadbalancers": _group, "masters": _group, "workers": _group, "storage": _group})),
    "kubernetes": _obj({
        "version": _doc("the Kubernetes minor (pkgs.k8s.io has a repository per minor); "
                        "quote it", {"type": "string"}),
        "pod_cidr": _doc("the pods' range (a /24 per node)", _ip),
        "service_cidr": _doc("the Services' range", _ip),
        "api_vip": _doc("the API's virtual IP, held by the load balancers", _ip),
        "api_port": _doc("the API's port", {"type": "integer", "minimum": 1,
                                             "maximum": 65535}),
        "metallb_pool": _doc("MetalLB's layer 2 pool, in the workers' network", _range),
        "dns_domain": _doc("the cluster's DNS domain (Services' names)", {"type": "string"}),
        "shared_volume_path": _doc("where every Kubernetes host mounts the Gluster volume "
                                   "the StorageClass keeps its volumes on",
                                   {"type": "string"})}),
    "storage": _obj({
        # Gluster volumes by name: replica sets across the storage hosts, in host order.
        "volumes": _doc("Gluster volumes by name, each with its replica count", {
            "type": "object", "minProperties": 1, "propertyNames": _volume,
            "additionalProperties": _obj({"replica": _doc("copies of each file",
                                                          {"type": "integer", "minimum": 2})})}),
        "kubernetes_volume": _doc("the volume the Kubernetes hosts mount", _volume),
        "ping_timeout": _doc("seconds before a client gives up on a silent brick (bounds a "
                             "write stall)", {"type": "integer", "minimum": 1,
                                              "maximum": 1800})}),
    # The load balancers' cluster: corosync's token (the time to declare a node dead, which
    # bounds a hard failover) and HAProxy's stats port (on each node's own address).
    "loadbalancers": _obj({
        "corosync_token_ms": _doc("how long corosync waits before declaring a node dead "
                                  "(bounds a hard failover)",
                                  {"type": "integer", "minimum": 100}),
        "stats_port": _doc("HAProxy's stats page, on each load balancer's own address",
                           {"type": "integer", "minimum": 1, "maximum": 65535})}),
    # The boxes follow the image's Debian release (kubelab.debian), not the spec.
    "provider": _obj({"default": _doc("where `kubelab up` puts hosts without --provider",
                                      {"enum": PROVIDERS})}),
}, {"extends": _doc("a spec file this one changes (a path relative to it)", {"type": "string"}),
    "ssh_hosts": _doc("existing machines (bare metal) by planned host name, reached over SSH", {
        "type": "object", "additionalProperties": _obj(
            {"address": _doc("where to reach it", _ssh_address)},
            {"user": _doc("SSH user (default root)", _user),
             "port": _doc("SSH port (default 22)", {"type": "integer", "minimum": 1,
                                                    "maximum": 65535}),
             "key": _doc("SSH private key file", _file),
             # network name -> the real NIC's MAC, for its DHCP reservation
             "macs": _doc("network name -> its real NIC's MAC, for the DHCP reservation",
                          {"type": "object", "additionalProperties": _mac})})})})


# JSON Schema counts 2048.0 as an integer; a spec's sizes and counts are whole numbers.
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


@dataclass(frozen=True)
class Problem:
    path: str     # dotted field path in the spec, e.g. networks.mast.cidr
    value: object
    message: str  # what is wrong and what would fix it

    def __str__(self):
        return f"{self.path}: {self.message}{_shown(self.value)}"


def _shown(value):
    """The bad value, shortened: never a whole file, a long value or a nested block (an
    `extends:` of the wrong file must not echo, say, a private key)."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    text = repr(value)
    if len(text) > SHOWN_CHARS:
        text = f"{text[:SHOWN_CHARS]}... ({len(str(value))} characters)"
    return f" (got {text})"


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


class _Loader(yaml.SafeLoader):
    """YAML that refuses duplicate keys (the first block would silently be dropped) and
    more than MAX_ALIASES alias uses (an alias bomb expands to gigabytes)."""

    aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} alias uses (*name): write the "
                                     "values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.YAMLError(f"key '{key}' appears twice in one mapping (line "
                                     f"{key_node.start_mark.line + 1}): keep one")
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


def _file_problem(path, message):
    return SpecError(path, [Problem("(file)", None, message)])


def _load(path, via):
    """The YAML of spec file `path` (`via`: the spec whose `extends:` names it)."""
    fix = f"fix `extends:` in {via}" if via else "pass an existing spec file with --spec"
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _file_problem(path, f"larger than {MAX_FILE_BYTES >> 10} KiB: not a spec file")
        return yaml.load(path.read_bytes().decode("utf-8"), Loader=_Loader)
    except FileNotFoundError:
        raise _file_problem(path, f"no such spec file; {fix}, or copy kubelab.yaml") from None
    except IsADirectoryError:
        raise _file_problem(path, f"a directory, not a spec file; {fix}") from None
    except UnicodeDecodeError as err:
        raise _file_problem(path, f"not UTF-8 text (byte {err.start}); {fix}") from None
    except yaml.MarkedYAMLError as err:     # where, and what: never the file's own text
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _file_problem(path, f"not valid YAML{where}: {err.problem}") from None
    except yaml.YAMLError as err:
        raise _file_problem(path, f"not valid YAML: {err}") from None


def read_yaml(path, seen=(), via=None):
    path = Path(path).resolve()
    if path in seen:
        raise SpecError(path, [Problem("extends", str(path), "spec files extend each other in "
                                       "a loop; remove one `extends:`")])
    data = _load(path, via)
    if not isinstance(data, dict):
        raise SpecError(path, [Problem("(file)", None, "a spec is a YAML mapping of keys such "
                                       f"as name, networks (this file holds a {type(data).__name__})")])
    if "extends" in data:
        target = data["extends"]
        if not isinstance(target, str) or not target.strip():
            raise SpecError(path, [Problem("extends", target, "name the spec file this one "
                                           "extends (a path relative to this file)")])
        base = read_yaml(path.parent / target, seen + (path,), via=path)
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
            elsewhere = _belongs(key)
            if close:
                hint = f"did you mean '{close[0]}'?"
            elif elsewhere:
                hint = f"it belongs elsewhere: {elsewhere}"
            else:
                hint = f"allowed here: {', '.join(allowed)}"
            path = key if where == "(top level)" else f"{where}.{key}"
            problems.append(Problem(path, None, REMOVED.get(path, f"unknown key; {hint}")))
        return problems
    if error.validator == "required":
        missing = error.message.split("'")[1]
        path = missing if where == "(top level)" else f"{where}.{missing}"
        return [Problem(path, None, "missing; add it (see kubelab.yaml for an example)")]
    if error.validator == "type" and error.validator_value == "integer":
        return [Problem(where, error.instance, "must be a whole number (e.g. 2048, not 2048.0)")]
    if error.validator == "type" and error.validator_value == "string" and \
            isinstance(error.instance, float):
        return [Problem(where, error.instance, "must be text: quote it, e.g. \"1.30\" (YAML "
                        "reads 1.30 unquoted as the number 1.3)")]
    if error.validator == "type":
        return [Problem(where, error.instance, f"must be of type {error.validator_value}")]
    if error.validator == "pattern":
        return [Problem(where, error.instance, f"must be {error.schema['description']}")]
    if error.validator in ("minimum", "maximum"):
        return [Problem(where, error.instance, "must be from "
                        f"{error.schema.get('minimum', '-')} to {error.schema.get('maximum', '-')}")]
    if error.validator == "enum":
        return [Problem(where, error.instance, f"must be one of {error.validator_value}")]
    return [Problem(where, error.instance, error.message)]


def _schema_paths(schema=None, prefix=""):
    """Every key path the schema knows ('hosts.masters', 'kubernetes.api_vip', ...)."""
    schema = SCHEMA if schema is None else schema
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(sub, dict):
            yield from _schema_paths(sub, path + ".")


def _belongs(key):
    """Where a key that is unknown at its level is known: the same name or a near one, at
    another level (users guess `masters`, `vip`, `metallb` at the top level)."""
    paths = list(_schema_paths())
    last = {p: p.rsplit(".", 1)[-1] for p in paths}
    found = [p for p in paths if last[p] == key] or \
        [p for p in paths if key in last[p].split("_")] or \
        [p for p in paths if last[p] in difflib.get_close_matches(key, last.values(), n=1,
                                                                  cutoff=0.75)]
    return ", ".join(found[:3])


def schema_problems(data):
    """Every place the spec's shape or types differ from the schema, as Problems."""
    problems = []
    validator = Validator(SCHEMA)
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        problems.extend(_describe(error))
    return problems


def without_unknown_keys(data):
    """(problems, spec): the unknown keys (typos) as Problems, and a copy of the spec without
    them, so that the rest of the spec can still be checked and the user sees every problem
    at once."""
    spec = copy.deepcopy(data)
    problems = []
    validator = Validator(SCHEMA)
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
