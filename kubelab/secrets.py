"""The lab's secrets: generated once per lab, kept in its state dir (file 0600, dir 0700,
never in git), handed to the templates beside the plan. Rendering and the deploy read the
same file, so what `kubelab render` shows is what lands on the hosts; `kubelab destroy`
removes it and a re-created lab gets new ones. No default password anywhere."""
import base64
import json
import os
import secrets as random
import string

from kubelab.paths import lab_dir

LOWER_DIGITS = string.ascii_lowercase + string.digits


def _word(length, alphabet=LOWER_DIGITS):
    return "".join(random.choice(alphabet) for _ in range(length))


# Every secret a lab has, and how a new one is made. A name added here is generated for
# labs that already exist too, beside the values they keep.
GENERATORS = {
    # corosync's authkey (what corosync-keygen writes: 256 random bytes), base64 here.
    "corosync_authkey": lambda: base64.b64encode(random.token_bytes(256)).decode(),
    "haproxy_stats_user": lambda: "kubelab",
    "haproxy_stats_password": lambda: _word(24, string.ascii_letters + string.digits),
    # kubeadm's formats: token [a-z0-9]{6}.[a-z0-9]{16}, certificate key 32 bytes in hex.
    "kubeadm_token": lambda: f"{_word(6)}.{_word(16)}",
    "kubeadm_certificate_key": lambda: random.token_hex(32),
}


def secrets_file(plan):
    return lab_dir(plan) / "secrets.json"


def lab_secrets(plan):
    """{name: value} of the lab's secrets, generating (and saving) those it lacks."""
    path = secrets_file(plan)
    known = json.loads(path.read_text()) if path.exists() else {}
    missing = {name: make() for name, make in GENERATORS.items() if name not in known}
    if missing:
        known.update(missing)
        write_private(path, json.dumps(known, indent=2, sort_keys=True) + "\n")
    return known


def remove(plan):
    """Forget the lab's secrets (a destroyed lab; the next one gets new ones)."""
    secrets_file(plan).unlink(missing_ok=True)


def write_private(path, text):
    """Write `text` to `path` with mode 0600 from the first byte, replacing it whole."""
    os.chmod(path.parent, 0o700)
    fresh = path.with_name(path.name + ".new")
    fresh.unlink(missing_ok=True)
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    fresh.replace(path)
