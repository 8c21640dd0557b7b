"""The reference of every spec key, generated from the schema (kubelab.spec.SCHEMA) and the
default spec: `python -m kubelab.specdoc > docs/spec.md` (a test keeps the file current)."""
import json

from kubelab.paths import DEFAULT_SPEC
from kubelab.spec import SCHEMA, read_yaml

HEADER = """# The spec: every key

Generated from kubelab's schema and `kubelab.yaml` (`python -m kubelab.specdoc`); do not edit.
A spec may `extends:` another and change only what differs (see `examples/`). `<name>` stands
for a key of your choice (a network, a volume, a host). "Default" is `kubelab.yaml`'s value
(for `<name>` keys: its first entry's).

| key | type | default | meaning |
|---|---|---|---|
"""


def _type(schema):
    if "enum" in schema:
        return " \\| ".join(schema["enum"])
    kind = schema.get("type", "")
    if kind == "integer" and ("minimum" in schema or "maximum" in schema):
        return f"integer {schema.get('minimum', '')}..{schema.get('maximum', '')}"
    if kind == "array":
        return f"list of {_type(schema['items'])}"
    if "pattern" in schema:
        return f"string: {schema['description']}"
    return kind


def _default(defaults, path):
    value = defaults
    for key in path:
        if key == "<name>":
            value = next(iter(value.values()), None) if isinstance(value, dict) else None
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            value = None
        if value is None:
            return ""
    if isinstance(value, dict):
        return ""
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def rows(schema=SCHEMA, path=(), defaults=None):
    """(key path, type, default, meaning) of every key, in schema order."""
    defaults = read_yaml(DEFAULT_SPEC) if defaults is None else defaults
    for key, sub in schema.get("properties", {}).items():
        here = path + (key,)
        children = sub.get("properties") or isinstance(sub.get("additionalProperties"), dict)
        kind = "mapping" if children else _type(sub)
        if sub.get("title") or not children:
            yield ".".join(here), kind, _default(defaults, here), sub.get("title", "")
        if sub.get("properties"):
            yield from rows(sub, here, defaults)
        elif isinstance(sub.get("additionalProperties"), dict):
            yield from rows(sub["additionalProperties"], here + ("<name>",), defaults)


def reference():
    lines = [f"| `{key}` | {kind} | {default} | {meaning} |"
             for key, kind, default, meaning in rows()]
    return HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
