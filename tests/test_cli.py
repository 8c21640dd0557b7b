"""`kubelab plan` prints the seed's network table (corrected) and --json the same data."""
import json
import subprocess
import sys

from kubelab.paths import DEFAULT_SPEC, REPO
from kubelab.plan import load_plan


def kubelab(*args):
    run = subprocess.run([sys.executable, "-m", "kubelab", *args], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_plan_table_is_the_seed_table():
    plan = load_plan(DEFAULT_SPEC)
    lines = [" ".join(line.split()) for line in kubelab("plan").splitlines()]
    expected = [f"CIDR {plan.supernet}", f"POD CIDR {plan.pod_cidr}",
                f"MetalLB {plan.metallb_pool.first} - {plan.metallb_pool.last}"]
    for net in plan.networks:
        expected += [f"Subnet - {net.name} {net.cidr}",
                     f"DHCP - {net.name} {net.dhcp.first} - {net.dhcp.last}",
                     f"DNS/Gateway - {net.name} {net.gateway}"]
    for row in expected:
        assert row in lines
    # The seed's slip is corrected: every DHCP range lies in its own subnet.
    assert all(n.dhcp.first in n.cidr and n.dhcp.last in n.cidr for n in plan.networks)


def test_plan_json_carries_the_same_data_as_the_table():
    data = json.loads(kubelab("plan", "--json"))
    table = kubelab("plan")
    for net in data["networks"]:
        assert net["cidr"] in table and net["gateway"] in table
        assert net["dhcp"].replace("-", " - ") in table
    for host in data["hosts"]:
        assert host["name"] in table
        for nic in [host["mgmt"], *host["nics"]]:
            assert f"{nic['address']}/{nic['prefixlen']}" in table and nic["mac"] in table
    plan = load_plan(DEFAULT_SPEC)
    assert [h["name"] for h in data["hosts"]] == [h.name for h in plan.hosts]
    assert data["api_vip"] == str(plan.api_vip)
