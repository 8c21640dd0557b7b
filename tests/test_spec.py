"""Every validation rule, each with a malformed spec: all problems reported at once,
each naming its field; nothing is written."""
import subprocess
import sys

import pytest
import yaml

from kubelab import debian, validate
from kubelab.paths import DEFAULT_SPEC, REPO
from kubelab.plan import GROUPS, load_plan
from kubelab.spec import SpecError, read_yaml


def write_spec(tmp_path, overrides, name="spec.yaml"):
    """A spec that extends the default one with `overrides` (deep-merged)."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"extends": str(DEFAULT_SPEC), **overrides}))
    return path


def problems(tmp_path, overrides):
    with pytest.raises(SpecError) as err:
        load_plan(write_spec(tmp_path, overrides))
    return err.value.problems


def paths(tmp_path, overrides):
    return [p.path for p in problems(tmp_path, overrides)]


def test_default_spec_and_examples_are_valid():
    for spec in [DEFAULT_SPEC, *sorted((REPO / "examples").glob("*.yaml"))]:
        assert load_plan(spec).hosts


def test_unknown_key_suggests_the_right_one(tmp_path):
    found = problems(tmp_path, {"hosts": {"masters": {"memroy": 4096}}})
    assert [p.path for p in found] == ["hosts.masters.memroy"]
    assert "did you mean 'memory'" in found[0].message


def test_unknown_top_level_key(tmp_path):
    assert paths(tmp_path, {"netwroks": {}}) == ["netwroks"]


def test_boxes_come_from_the_image_release_not_the_spec(tmp_path):
    found = problems(tmp_path, {"provider": {"boxes": {"libvirt": "kubelab/debian12"}}})
    assert [p.path for p in found] == ["provider.boxes"]
    assert "kubelab/debian.py" in found[0].message
    plan = load_plan(DEFAULT_SPEC)
    assert plan.boxes == {"virtualbox": f"debian/{debian.SUITE}64",
                          "libvirt": f"kubelab/debian{debian.VERSION}"}


def test_wrong_type(tmp_path):
    found = problems(tmp_path, {"hosts": {"workers": {"count": "two"}}})
    assert [p.path for p in found] == ["hosts.workers.count"]
    assert "whole number" in found[0].message


def test_a_float_is_not_a_count_or_a_size(tmp_path):
    found = problems(tmp_path, {"hosts": {"workers": {"count": 2.0, "memory": 2048.0}}})
    assert sorted(p.path for p in found) == ["hosts.workers.count", "hosts.workers.memory"]
    assert all("whole number" in p.message for p in found)


def test_missing_key(tmp_path):
    spec = yaml.safe_load(DEFAULT_SPEC.read_text())
    del spec["kubernetes"]["api_vip"]
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as err:
        load_plan(path)
    assert [p.path for p in err.value.problems] == ["kubernetes.api_vip"]


def test_unparseable_address(tmp_path):
    assert paths(tmp_path, {"networks": {"mast": {"gateway": "192.168.1.300"}}}) == \
        ["networks.mast.gateway"]


def test_overlapping_networks(tmp_path):
    found = paths(tmp_path, {"networks": {"glus": {"cidr": "192.168.2.0/23"}}})
    assert "networks.glus.cidr" in found


def test_network_outside_supernet(tmp_path):
    assert "networks.dmz.cidr" in paths(tmp_path, {"supernet": "192.168.0.0/22"})


def test_pod_cidr_overlapping_a_host_network(tmp_path):
    found = problems(tmp_path, {"kubernetes": {"pod_cidr": "192.168.0.0/20"}})
    assert {p.path for p in found} == {"kubernetes.pod_cidr"}
    assert "networks.mast.cidr" in found[0].message


def test_service_cidr_overlapping_management(tmp_path):
    assert paths(tmp_path, {"kubernetes": {"service_cidr": "192.168.121.0/24"}}) == \
        ["kubernetes.service_cidr"]


def test_pod_and_service_cidr_overlap(tmp_path):
    assert paths(tmp_path, {"kubernetes": {"service_cidr": "10.244.128.0/17"}}) == \
        ["kubernetes.service_cidr"]


def test_dhcp_range_outside_its_subnet(tmp_path):
    # The 2019 design's own slip: the glus range written inside the node subnet.
    found = paths(tmp_path, {"networks": {"glus": {"dhcp": "192.168.2.50-192.168.2.200"}}})
    assert found == ["networks.glus.dhcp"]


def test_dhcp_range_over_reserved_hosts_and_gateway(tmp_path):
    found = problems(tmp_path, {"networks": {"mast": {"dhcp": "192.168.1.2-192.168.1.254"}}})
    messages = " ".join(p.message for p in found if p.path == "networks.mast.dhcp")
    assert "kube-mast01" in messages and "networks.mast.gateway" in messages


def test_dhcp_range_over_vip(tmp_path):
    found = problems(tmp_path, {"networks": {"dmz": {"dhcp": "192.168.4.15-192.168.4.200"}}})
    assert any(p.path == "networks.dmz.dhcp" and "api_vip" in p.message for p in found)


def test_dhcp_range_over_metallb_pool(tmp_path):
    found = problems(tmp_path, {"networks": {"node": {"dhcp": "192.168.2.40-192.168.2.200"}}})
    assert any(p.path == "networks.node.dhcp" and "metallb_pool" in p.message for p in found)


def test_vip_outside_dmz(tmp_path):
    assert paths(tmp_path, {"kubernetes": {"api_vip": "192.168.1.20"}}) == ["kubernetes.api_vip"]


def test_metallb_pool_outside_node_network(tmp_path):
    assert paths(tmp_path, {"kubernetes": {"metallb_pool": "192.168.3.210-192.168.3.220"}}) == \
        ["kubernetes.metallb_pool"]


def test_more_hosts_than_the_subnet_holds(tmp_path):
    found = problems(tmp_path, {"hosts": {"workers": {"count": 60}}})
    assert any(p.path == "networks.node.hosts_from" and "outside" in p.message for p in found)


def test_host_addresses_running_into_the_vip(tmp_path):
    found = problems(tmp_path, {"hosts": {"loadbalancers": {"count": 12}}})
    assert any(p.path == "networks.dmz.hosts_from" and "api_vip" in p.message for p in found)


def test_management_hosts_on_the_lab_machines_own_address(tmp_path):
    found = problems(tmp_path, {"management": {"hosts_from": "192.168.121.1"}})
    assert [p.path for p in found] == ["management.hosts_from"]
    assert "lab machine's own address" in found[0].message


@pytest.mark.parametrize("address, said", [
    ("192.168.2.7", "networks.node.cidr"), ("192.168.121.200", "management.cidr"),
    ("10.244.3.1", "kubernetes.pod_cidr"), ("10.96.0.1", "kubernetes.service_cidr"),
    ("127.0.0.1", "unicast"), ("224.0.0.1", "unicast"), ("169.254.1.1", "unicast")])
def test_outside_address_outside_every_lab_network(tmp_path, address, said):
    found = problems(tmp_path, {"management": {"outside": address}})
    assert [p.path for p in found] == ["management.outside"]
    assert said in found[0].message


def test_duplicate_host_names(tmp_path):
    found = paths(tmp_path, {"hosts": {"workers": {"prefix": "kube-mast"}}})
    assert "hosts.workers.prefix" in found


def test_host_name_not_a_dns_label(tmp_path):
    assert "hosts.storage.prefix" in paths(tmp_path, {"hosts": {"storage": {"prefix": "Glus_"}}})


@pytest.mark.parametrize("count", [0, 2, 4])
def test_master_count_breaking_etcd_quorum(tmp_path, count):
    assert paths(tmp_path, {"hosts": {"masters": {"count": count}}}) == ["hosts.masters.count"]


def test_fewer_than_three_gluster_nodes(tmp_path):
    assert paths(tmp_path, {"hosts": {"storage": {"count": 2}}}) == ["hosts.storage.count"]


def test_single_haproxy_is_allowed_with_a_warning(tmp_path):
    plan = load_plan(write_spec(tmp_path, {"hosts": {"loadbalancers": {"count": 1}}}))
    assert len(plan.warnings) == 1 and "fail over" in plan.warnings[0]
    assert load_plan(DEFAULT_SPEC).warnings == []


def test_memory_below_role_minimum(tmp_path):
    found = problems(tmp_path, {"hosts": {"masters": {"memory": 1024, "cpus": 1}}})
    assert {p.path for p in found} == {"hosts.masters.memory", "hosts.masters.cpus"}


def test_a_load_balancer_needs_the_memory_corosync_was_measured_to_need(tmp_path):
    found = problems(tmp_path, {"hosts": {"loadbalancers": {"memory": 384}}})
    assert [(p.path, p.message) for p in found] == [
        ("hosts.loadbalancers.memory", "loadbalancers need at least 512 MiB")]
    assert load_plan(write_spec(tmp_path, {"hosts": {"loadbalancers": {"memory": 512}}}))


def test_unsupported_kubernetes_version(tmp_path):
    found = problems(tmp_path, {"kubernetes": {"version": "1.19"}})
    assert [p.path for p in found] == ["kubernetes.version"]
    assert "1.36" in found[0].message


def test_pod_cidr_too_small_for_the_nodes(tmp_path):
    # The default lab has 5 Kubernetes nodes, a /24 each: a /22 holds only 4.
    found = problems(tmp_path, {"kubernetes": {"pod_cidr": "10.244.0.0/22"}})
    assert [p.path for p in found] == ["kubernetes.pod_cidr"]
    assert "5 Kubernetes nodes" in found[0].message and "/21 or larger" in found[0].message
    assert load_plan(write_spec(tmp_path, {"kubernetes": {"pod_cidr": "10.244.0.0/21"}}))


def test_cluster_dns_domain_and_shared_volume_path_are_checked(tmp_path):
    found = problems(tmp_path, {"kubernetes": {"dns_domain": "Cluster_Local",
                                               "shared_volume_path": "mnt/gluster"}})
    assert [p.path for p in found] == ["kubernetes.dns_domain", "kubernetes.shared_volume_path"]


def test_unknown_network_for_a_group(tmp_path):
    assert paths(tmp_path, {"hosts": {"workers": {"network": "nodes"}}}) == \
        ["hosts.workers.network"]


def test_ssh_host_must_be_planned(tmp_path):
    assert paths(tmp_path, {"ssh_hosts": {"kube-mast09": {"address": "10.0.0.9"}}}) == \
        ["ssh_hosts.kube-mast09"]


def test_every_problem_is_reported_at_once(tmp_path):
    found = paths(tmp_path, {"hosts": {"masters": {"count": 2}, "storage": {"count": 1}},
                             "kubernetes": {"version": "1.20", "api_vip": "192.168.1.20"}})
    assert set(found) >= {"hosts.masters.count", "hosts.storage.count", "kubernetes.version",
                          "kubernetes.api_vip"}


def test_typos_are_reported_with_the_other_problems(tmp_path):
    found = paths(tmp_path, {"hosts": {"masters": {"count": 2, "memroy": 4096}},
                             "kubernetes": {"verison": "1.36"}})
    assert found == ["hosts.masters.memroy", "kubernetes.verison", "hosts.masters.count"]
    found = paths(tmp_path, {"domian": "lab.local", "hosts": {"workers": {"count": "two"}}})
    assert found == ["domian", "hosts.workers.count"]


def test_extends_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(SpecError, match="loop"):
        load_plan(tmp_path / "a.yaml")


def test_missing_spec_file_names_the_fix(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_plan(tmp_path / "nope.yaml")


def test_cli_reports_problems_and_exits_non_zero(tmp_path):
    spec = write_spec(tmp_path, {"hosts": {"masters": {"count": 2}}})
    before = sorted(p.name for p in tmp_path.iterdir())
    run = subprocess.run([sys.executable, "-m", "kubelab", "--spec", str(spec), "render"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 2
    assert "hosts.masters.count" in run.stderr and "nothing was changed" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# --- files that are not what they should be ------------------------------------------------

def load_problems(path):
    with pytest.raises(SpecError) as err:
        load_plan(path)
    return err.value


def test_non_utf8_spec(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in str(load_problems(path))


@pytest.mark.parametrize("target", ["", ".", "missing.yaml"])
def test_extends_must_name_an_existing_file(tmp_path, target):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"extends": target}))
    text = str(load_problems(path))
    assert "extends" in text and "Traceback" not in text
    if target == "missing.yaml":      # names the missing file and the spec that points there
        assert str(tmp_path / "missing.yaml") in text and str(path) in text


def test_a_duplicate_key_is_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(f"extends: {DEFAULT_SPEC}\nhosts:\n  workers: {{count: 1}}\n"
                    "hosts:\n  masters: {count: 1}\n")
    assert "key 'hosts' appears twice" in str(load_problems(path))


def test_an_alias_bomb_is_refused_small(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]"
              for i in range(12)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    error = load_problems(path)
    assert "alias" in str(error) and len(str(error)) < 1000


def test_a_huge_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\n" + "# padding\n" * 200_000)
    assert "not a spec file" in str(load_problems(path))


def test_counts_are_capped_before_planning(tmp_path):
    found = problems(tmp_path, {"hosts": {"workers": {"count": 1_000_000}}})
    assert [p.path for p in found] == ["hosts.workers.count"]


def test_an_unquoted_version_says_to_quote_it(tmp_path):
    found = problems(tmp_path, {"kubernetes": {"version": 1.30}})
    assert found[0].path == "kubernetes.version" and "quote it" in found[0].message


def test_long_values_are_shortened_and_blocks_never_echoed(tmp_path):
    secret = "-----BEGIN PRIVATE KEY-----" + "A" * 5000
    error = load_problems(write_spec(tmp_path, {"domain": secret, "users": [{"key": secret}]}))
    assert "A" * 100 not in str(error) and "characters)" in str(error)


@pytest.mark.parametrize("key, where", [("masters", "hosts.masters"), ("vip", "kubernetes.api_vip"),
                                        ("metallb", "kubernetes.metallb_pool")])
def test_a_key_at_the_wrong_level_says_where_it_belongs(tmp_path, key, where):
    found = problems(tmp_path, {key: 1})
    assert found[0].path == key and where in found[0].message


def test_the_plan_carries_every_groups_network_cpus_and_memory(tmp_path):
    """What the rules need of the host groups comes from the plan: it keeps no spec."""
    spec = write_spec(tmp_path, {"hosts": {"workers": {"cpus": 3, "memory": 3072}}})
    raw = read_yaml(spec)["hosts"]
    plan = load_plan(spec)
    assert list(plan.groups) == GROUPS
    for name, group in plan.groups.items():
        assert (group.cpus, group.memory) == (raw[name]["cpus"], raw[name]["memory"])
        assert group.network == raw[name].get("network")
        assert group.count == len(plan.group(name))
        for host in plan.group(name):
            assert (host.cpus, host.memory) == (group.cpus, group.memory)
            if group.network:
                assert [n.network for n in host.nics] == [group.network]
    assert plan.groups["workers"].cpus == 3
    assert not hasattr(plan, "spec") and "spec" not in plan.to_dict()
    assert plan.to_dict()["groups"]["workers"]["memory"] == 3072
    for net in plan.networks:
        assert plan.hosts_on(net.name) == [h for h in plan.hosts if h.group != "gateway" and
                                           plan.groups[h.group].network == net.name]


def test_the_rules_read_the_plan(tmp_path):
    """A plan changed after planning is judged on what it now says."""
    plan = load_plan(DEFAULT_SPEC)
    plan.groups["masters"].memory = 512
    plan.groups["storage"].network = "nosuchnet"
    with pytest.raises(SpecError) as err:
        validate.check(plan, "test")
    assert {p.path for p in err.value.problems} >= {"hosts.masters.memory",
                                                    "hosts.storage.network"}


# --- accepted but wrong, refused but valid -----------------------------------------------------

def test_a_gateway_at_dot_one_is_valid(tmp_path):
    plan = load_plan(write_spec(tmp_path, {"networks": {
        n: {"gateway": f"192.168.{i}.1", "dhcp": f"192.168.{i}.50-192.168.{i}.200"}
        for i, n in enumerate(["mast", "node", "glus", "dmz"], start=1)}}))
    for net in plan.networks:
        assert net.host_ip not in (net.gateway, *[h.nic(net.name).address
                                                  for h in plan.hosts_on(net.name)])


@pytest.mark.parametrize("overrides, field", [
    ({"kubernetes": {"api_vip": "192.168.4.254"}}, "kubernetes.api_vip"),
    ({"kubernetes": {"metallb_pool": "192.168.2.240-192.168.2.254"}}, "kubernetes.metallb_pool"),
    ({"kubernetes": {"pod_cidr": "fd00:10::/56"}}, "kubernetes.pod_cidr"),
    ({"upstream_dns": ["192.168.1.254"]}, "upstream_dns.0"),
    ({"upstream_dns": ["127.0.0.1"]}, "upstream_dns.0"),
])
def test_accepted_but_wrong_is_refused(tmp_path, overrides, field):
    assert field in paths(tmp_path, overrides)


def test_a_gateway_at_zero_is_a_message(tmp_path):
    found = problems(tmp_path, {"networks": {"mast": {"gateway": "0.0.0.0"}}})
    assert "networks.mast.gateway" in [p.path for p in found]


def test_shape_and_address_problems_are_listed_together(tmp_path):
    found = paths(tmp_path, {"hosts": {"workers": {"count": "two"}},
                             "networks": {"mast": {"gateway": "192.168.1.999"}},
                             "netwroks": {}})
    assert {"hosts.workers.count", "networks.mast.gateway", "netwroks"} <= set(found)


def test_the_spec_reference_is_current_and_says_what_every_key_means():
    from kubelab import specdoc
    assert (REPO / "docs" / "spec.md").read_text() == specdoc.reference(), \
        "docs/spec.md is stale: python -m kubelab.specdoc > docs/spec.md"
    assert all(meaning for _, kind, _, meaning in specdoc.rows() if kind != "mapping")
