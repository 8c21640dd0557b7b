"""`kubelab plan` prints the network table (CIDRs, DHCP ranges, gateways) and --json the
same data."""
import json
import os
import subprocess
import sys

import yaml

from kubelab.paths import DEFAULT_SPEC, REPO
from kubelab.plan import load_plan


def kubelab(*args):
    run = subprocess.run([sys.executable, "-m", "kubelab", *args], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_plan_table_lists_every_network_and_range():
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
    # Every DHCP range lies in its own subnet (the 2019 design's glus range did not).
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


def test_render_writes_every_hosts_files_and_drops_those_of_removed_hosts(tmp_path):
    state = tmp_path / "state"
    spec = tmp_path / "lab.yaml"
    env = {**os.environ, "KUBELAB_STATE": str(state)}

    def render(workers):
        spec.write_text(yaml.safe_dump({"extends": str(DEFAULT_SPEC), "name": "rendertest",
                                        "hosts": {"workers": {"count": workers}}}))
        run = subprocess.run([sys.executable, "-m", "kubelab", "--spec", str(spec), "render"],
                             capture_output=True, text=True, cwd=REPO, env=env)
        assert run.returncode == 0, run.stderr
        return state / "rendertest" / "rendered"

    out = render(2)
    plan = load_plan(spec)
    dnsmasq = (out / "hosts" / plan.gateway.name / "etc/dnsmasq.d/kubelab.conf").read_text()
    for host in plan.hosts:
        assert (out / "hosts" / host.name / "etc/resolv.conf").is_file()
        for nic in host.nics if host is not plan.gateway else []:   # its legs are static
            assert f"dhcp-host={nic.mac},{nic.address},{host.name}," in dnsmasq
    assert (state / "rendertest" / "vagrant" / "Vagrantfile").is_file()
    assert json.loads((out / "plan.json").read_text())["name"] == "rendertest"

    last = plan.group("workers")[-1].name
    out = render(1)
    assert not (out / "hosts" / last).exists()
    assert not (out.parent / "rendered.new").exists()


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`kubelab plan | head`: no traceback, no "Broken pipe", exit 0 (like a Unix tool)."""
    spec = tmp_path / "big.yaml"
    spec.write_text(f"extends: {REPO / 'benchmarks' / 'scale.yaml'}\n"
                    "hosts: {workers: {count: 500}}\n")
    run = subprocess.run(f"{sys.executable} -m kubelab --spec {spec} plan --json | head -c 10",
                         shell=True, cwd=REPO, capture_output=True, text=True,
                         executable="/bin/bash")
    assert run.stdout == "{\n  \"name\":"[:10] and run.stderr == ""
    status = subprocess.run(f"set -o pipefail; {sys.executable} -m kubelab --spec {spec} plan "
                            "--json | head -c 10 >/dev/null", shell=True, cwd=REPO,
                            executable="/bin/bash")
    assert status.returncode == 0
