"""The load balancers' stage without hosts: its rendered configs against the plan, the spec
rules it adds, and the commands it runs (pyinfra's @fake connector): the cluster's
resources loaded from the chosen load balancer only, and only when they differ."""
import hashlib
import re

import pytest

from kubelab.paths import DEFAULT_SPEC, REPO
from kubelab.plan import load_plan
from kubelab.spec import SpecError
from tasks import loadbalancers as stage
from tasks.helpers import chosen
from tests.test_deploy_commands import commands, fake_deploy, fresh_host, host_files
from tests.test_spec import paths, write_spec

SMALL = REPO / "examples" / "small.yaml"


def lines(text):
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def plan_with(tmp_path, count):
    return load_plan(write_spec(tmp_path, {"hosts": {"loadbalancers": {"count": count}}}))


# --- corosync ---------------------------------------------------------------------------------

def test_corosync_conf_lists_every_load_balancer_on_its_dmz_address():
    plan = load_plan(DEFAULT_SPEC)
    lbs = plan.group("loadbalancers")
    for me in lbs:
        conf = lines(host_files(plan, me)[stage.COROSYNC])
        assert [c for c in conf if c.startswith(("name:", "nodeid:", "ring0_addr:"))] == [
            item for i, lb in enumerate(lbs, start=1)
            for item in (f"name: {lb.name}", f"nodeid: {i}",
                         f"ring0_addr: {lb.nic('dmz').address}")]
        assert {"transport: knet", "crypto_cipher: aes256", "crypto_hash: sha256",
                f"cluster_name: {plan.name}", "two_node: 1",
                f"token: {plan.corosync_token_ms}"} <= set(conf)
    # The same file on every node.
    assert len({host_files(plan, me)[stage.COROSYNC] for me in lbs}) == 1


@pytest.mark.parametrize("count", [1, 3])
def test_two_node_quorum_only_for_a_pair(tmp_path, count):
    plan = plan_with(tmp_path, count)
    conf = lines(host_files(plan, plan.group("loadbalancers")[0])[stage.COROSYNC])
    assert "two_node: 1" not in conf
    assert len([c for c in conf if c.startswith("ring0_addr:")]) == count


def test_corosync_waits_at_boot_for_its_ring_address():
    plan = load_plan(DEFAULT_SPEC)
    for me in plan.group("loadbalancers"):
        dropin = host_files(plan, me)[stage.COROSYNC_WAIT]
        assert re.search(rf"ExecStartPre=/usr/bin/timeout \d+ .* inet {me.address}/", dropin)


# --- HAProxy ----------------------------------------------------------------------------------

def test_haproxy_fronts_the_vip_and_checks_every_master_readyz():
    plan = load_plan(DEFAULT_SPEC)
    for me in plan.group("loadbalancers"):
        conf = lines(host_files(plan, me)[stage.HAPROXY])
        assert f"bind {plan.api_vip}:{plan.api_port}" in conf
        assert "mode tcp" in conf
        assert [c for c in conf if c.startswith("server ")] == [
            f"server {m.name} {m.address}:{plan.api_port}" for m in plan.group("masters")]
        assert {"option httpchk GET /readyz", "http-check expect status 200"} <= set(conf)
        assert "default-server check check-ssl verify none inter 1s fall 2 rise 2" in conf
        assert not [c for c in conf if "ssl-hello-chk" in c or "tcp-check" in c]


def test_haproxy_stats_on_the_dmz_address_with_the_lab_credentials():
    plan = load_plan(DEFAULT_SPEC)
    made_up = {"haproxy_stats_user": "someone", "haproxy_stats_password": "s3cret-made-up",
               "corosync_authkey": "", "kubeadm_token": "", "kubeadm_certificate_key": ""}
    port = plan.stats_port
    for me in plan.group("loadbalancers"):
        conf = lines(stage.files_for(plan, me, made_up)[stage.HAPROXY])
        stats = conf[conf.index("listen stats"):]
        assert f"bind {me.nic('dmz').address}:{port}" in stats
        assert [c for c in stats if c.startswith("stats auth")] == \
            ["stats auth someone:s3cret-made-up"]


def test_the_vip_can_be_bound_before_it_is_held():
    assert stage.SYSCTLS == {"net.ipv4.ip_nonlocal_bind": "1"}


# --- pacemaker --------------------------------------------------------------------------------

def test_cluster_config_places_the_vip_with_a_running_haproxy():
    plan = load_plan(DEFAULT_SPEC)
    text = stage.cluster_config(plan, {"hapx01": "eth1", "hapx02": "enp0s8"})
    conf = " ".join(" ".join(lines(text)).replace("\\", " ").split())
    for item in ("stonith-enabled=false", "resource-stickiness=100",
                 f"primitive api-vip IPaddr2 params ip={plan.api_vip} cidr_netmask=24",
                 "params rule #uname eq hapx01 nic=eth1",
                 "params rule #uname eq hapx02 nic=enp0s8",
                 "primitive haproxy systemd:haproxy", "clone haproxy-clone haproxy",
                 "colocation api-vip-with-haproxy inf: api-vip haproxy-clone",
                 "order api-vip-after-haproxy Mandatory: haproxy-clone api-vip"):
        assert item in conf, item
    assert re.search(r"primitive api-vip .* op monitor interval=\d+s", conf)
    # The risk of running without fencing is written where the setting is.
    assert "VIP may come up on both" in text


# --- the spec ---------------------------------------------------------------------------------

def test_zero_load_balancers_are_refused(tmp_path):
    assert paths(tmp_path, {"hosts": {"loadbalancers": {"count": 0}}}) == \
        ["hosts.loadbalancers.count"]


def test_one_load_balancer_is_a_one_node_cluster_with_a_warning(tmp_path):
    plan = plan_with(tmp_path, 1)
    assert len(plan.warnings) == 1 and "one-node cluster" in plan.warnings[0]


def test_the_token_must_be_a_number_of_milliseconds(tmp_path):
    with pytest.raises(SpecError) as err:
        load_plan(write_spec(tmp_path, {"loadbalancers": {"corosync_token_ms": "3s"}}))
    assert [p.path for p in err.value.problems] == ["loadbalancers.corosync_token_ms"]


# --- the deploy through the @fake connector ---------------------------------------------------

def loaded_cluster(plan):
    """A load balancer whose cluster already holds this configuration (NICs as faked)."""
    text = stage.cluster_config(plan, {lb.name: lb.nic("dmz").device
                                       for lb in plan.group("loadbalancers")})
    digest = hashlib.sha256(text.encode()).hexdigest()
    return {"head -1 /etc/corosync/corosync.conf": "# kubelab: the load balancers' cluster",
            "cibadmin --query": f"{digest}\n1"}


@pytest.mark.parametrize("state", ["fresh", "configured"])
def test_cluster_config_loads_from_the_chosen_node_only_when_it_differs(tmp_path, state):
    plan = load_plan(SMALL)
    first = chosen(plan, "loadbalancers")

    def answers(host):
        return {**(loaded_cluster(plan) if state == "configured" else {}),
                **fresh_host(host, "none")}

    events, _ = fake_deploy(tmp_path, SMALL, answers)
    for lb in plan.group("loadbalancers"):
        cmds = commands(events, lb.name)
        loads = [c for c in cmds if c.startswith("crm configure load update")]
        replaced = [c for c in cmds if c == "systemctl stop pacemaker corosync"]
        if state == "configured":
            assert not loads and not replaced, lb.name
        else:
            assert loads == ([f"crm configure load update {stage.CLUSTER}"]
                             if lb.name == first.name else []), lb.name
            # Debian's one-node cluster is stopped and cleared before corosync's config.
            assert replaced, lb.name
            assert cmds.index(replaced[0]) < next(
                i for i, c in enumerate(cmds) if c.startswith("if corosync -t -c"))
        assert any(c.startswith("if haproxy -c -f /var/lib/kubelab/") for c in cmds)
    others = [h for h in plan.hosts if h.group != "loadbalancers"]
    assert not [c for h in others for c in commands(events, h.name) if "crm " in c]


# --- the drill's arithmetic -------------------------------------------------------------------

class Recorded:
    """The drill's client, as its checks see it: (time, succeeded) of each request."""

    def __init__(self, results):
        self.results = results

    def since(self, t):
        return [r for r in self.results if r[0] >= t]


def test_outage_is_the_longest_run_of_failed_requests():
    from kubelab.drills.loadbalancer import outage, recovered
    results = [(10.0, True), (10.1, False), (10.2, True), (10.3, False), (10.4, False),
               (12.9, True), (13.0, False), (13.1, True)]
    assert outage(results) == 2.6
    assert outage([(1.0, True), (1.1, True)]) == 0.0
    assert outage([(1.0, True), (1.1, False), (1.5, False)]) == 0.4
    steady = [(13.2 + i / 10, True) for i in range(5)]
    assert recovered(10.0)(Recorded(results + steady))
    assert not recovered(10.0)(Recorded(results))               # not 5 successes yet
    assert not recovered(10.0)(Recorded(results[:5]))           # failing still
    assert not recovered(13.15)(Recorded(results + steady))     # nothing failed since


def test_the_drill_starts_once_every_request_of_its_baseline_succeeded():
    from kubelab.drills.loadbalancer import steady
    calm = [(10.0 + i / 10, True) for i in range(40)]          # 10.0 .. 13.9
    at_14 = steady(3, now=lambda: 14.0)
    assert at_14(Recorded(calm))
    assert not at_14(Recorded(calm[20:]))                       # requests for 2 s only
    assert not at_14(Recorded(calm[:30] + [(13.0, False)] + calm[31:]))
    assert steady(3, now=lambda: 14.5)(Recorded(calm[:5] + [(10.6, False)] + calm[6:]))


def test_a_failed_step_says_what_the_cluster_said_and_the_timeline_so_far(monkeypatch,
                                                                          capsys):
    """A step that fails (here: the VIP did not move) ends the drill with pacemaker's status
    from each load balancer, and --json still shows the timeline up to there."""
    import subprocess
    from kubelab import drills
    from kubelab.drills import loadbalancer

    class Client:
        results = []

        def __init__(self, plan, host):
            pass

        def wait(self, done, what):
            pass

        def stop(self):
            pass

    def steps(plan, timeline, client, figures):
        timeline.mark("3. hapx02 in standby")
        raise drills.DrillError("the VIP did not move within 120 s")

    def on_host(plan, host, command, timeout, check):
        return subprocess.CompletedProcess(command, 0, f"Online: [ {host.name} ]\n", "")
    plan = load_plan(DEFAULT_SPEC)
    for name, stand_in in {"Client": Client, "steps": steps, "on_host": on_host,
                           "client_host": lambda plan: plan.hosts[0],
                           "start_standins": lambda plan, timeline: [],
                           "stop_standins": lambda plan, started: None,
                           "up": lambda plan, group: plan.group(group)}.items():
        monkeypatch.setattr(loadbalancer, name, stand_in)
    monkeypatch.setattr(drills, "check_routes", lambda plan: None)
    with pytest.raises(drills.DrillError) as error:
        drills.main(plan, "loadbalancer", as_json=True)
    assert str(error.value) == ("the VIP did not move within 120 s\n"
                                "hapx01: crm_mon -1 -r -f:\nOnline: [ hapx01 ]\n\n"
                                "hapx02: crm_mon -1 -r -f:\nOnline: [ hapx02 ]\n")
    assert "s  3. hapx02 in standby\n" in capsys.readouterr().err
