"""The deploy without hosts: the files it renders, checked against the plan and by the
services' own checkers, and the commands it runs, through pyinfra's @fake connector."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from netaddr import IPAddress, IPNetwork

from kubelab.secrets import GENERATORS
from kubelab.inventory import host_data
from kubelab.paths import DEFAULT_SPEC, REPO
from kubelab.plan import load_plan
from kubelab.provision import STAGE, pyinfra_command, totals
import tasks
from tasks import host_files as lab_host_files

SMALL = REPO / "examples" / "small.yaml"
DEPLOY = "deploy.py"      # the deploy fake_deploy runs (tests of the helpers run their own)
DNSMASQ = "/etc/dnsmasq.d/kubelab.conf"
RULES = "/etc/iptables/rules.v4"


def host_files(plan, me):
    """What the deploy writes on `me`, with secrets made up for the test."""
    return lab_host_files(plan, me, {name: make() for name, make in GENERATORS.items()})


def lines(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


# --- rendered files ---------------------------------------------------------------------------

def test_dnsmasq_conf_serves_the_plan():
    plan = load_plan(DEFAULT_SPEC)
    conf = set(lines(host_files(plan, plan.gateway)[DNSMASQ]))
    expected = {f"domain={plan.domain}", f"local=/{plan.domain}/", "no-resolv", "no-hosts",
                f"host-record={plan.api_name},{plan.api_vip}"}
    expected |= {f"server={s}" for s in plan.upstream_dns}
    for net in plan.networks:
        expected |= {
            f"listen-address={net.gateway}",
            f"dhcp-range=set:{net.name},{net.dhcp.first},{net.dhcp.last},{net.netmask},12h",
            f"dhcp-option=tag:{net.name},option:router,{net.gateway}",
            f"dhcp-option=tag:{net.name},option:dns-server,{net.gateway}",
            f"dhcp-option=tag:{net.name},option:classless-static-route,0.0.0.0/0,{net.gateway}"}
    for host in plan.hosts:
        expected.add(f"host-record={host.fqdn},{host.name},{host.address}")
        if host.group != "gateway":     # every planned host, up or not, has its reservation
            expected |= {f"dhcp-host={n.mac},{n.address},{host.name},infinite" for n in host.nics}
    assert expected <= conf, expected - conf
    # Nothing else reserved or served, and no interface named anywhere.
    assert len([c for c in conf if c.startswith("dhcp-host=")]) == len(plan.hosts) - 1
    assert len([c for c in conf if c.startswith("dhcp-range=")]) == len(plan.networks)
    assert not [c for c in conf if re.match(r"(interface|except-interface)=", c)]


@pytest.mark.parametrize("spec", [DEFAULT_SPEC, SMALL, REPO / "examples" / "large.yaml"],
                         ids=lambda p: p.name)
def test_dnsmasq_accepts_the_config(spec, tmp_path):
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    assert Path(dnsmasq).exists(), "dnsmasq is missing: apt-get install dnsmasq-base"
    plan = load_plan(spec)
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(host_files(plan, plan.gateway)[DNSMASQ])
    run = subprocess.run([dnsmasq, "--test", "-C", str(conf)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_dnsmasq_rejects_a_broken_config(tmp_path):
    """The check the deploy runs before installing a config can fail."""
    plan = load_plan(DEFAULT_SPEC)
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(host_files(plan, plan.gateway)[DNSMASQ] + "dhcp-range=nonsense\n")
    run = subprocess.run(["dnsmasq", "--test", "-C", str(conf)], capture_output=True, text=True)
    assert run.returncode != 0


def test_firewall_rules_load_and_name_no_interface(tmp_path):
    plan = load_plan(DEFAULT_SPEC)
    rules = host_files(plan, plan.gateway)[RULES]
    path = tmp_path / "rules.v4"
    path.write_text(rules)
    # In a network namespace of its own: nothing on this machine is touched.
    run = subprocess.run(["unshare", "--net", "iptables-restore", "--test", str(path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert not re.search(r" -[io] ", rules)
    assert ":INPUT DROP [0:0]" in rules and ":FORWARD DROP [0:0]" in rules
    for net in plan.networks:
        assert f"-A POSTROUTING -s {net.cidr} -j KUBELAB-NAT" in rules
        assert f"-A KUBELAB-NAT -d {net.cidr} -j RETURN" in rules


def verdict(rules, chain, src, dst, proto="tcp", dport=None, sport=None, state="NEW",
            local=()):
    """What the rendered filter table does with one packet: the first matching rule's
    target in `chain`, else the chain's policy (`local`: the gateway's own addresses)."""
    filter_table = rules.split("*nat")[0].splitlines()
    for line in filter_table:
        words = line.split()
        if words[:2] != ["-A", chain]:
            continue
        opts = dict(zip(words[2::2], words[3::2]))
        tests = {"-s": lambda v: IPAddress(src) in IPNetwork(v),
                 "-d": lambda v: IPAddress(dst) in IPNetwork(v),
                 "-p": lambda v: v == proto,
                 "--dport": lambda v: str(dport) == v,
                 "--dports": lambda v: str(dport) in v.split(","),
                 "--sport": lambda v: str(sport) == v,
                 "--ctstate": lambda v: state in v.split(","),
                 "--src-type": lambda v: v == "LOCAL" and src in local}
        unknown = set(opts) - set(tests) - {"-m", "-j", "--reject-with"}
        assert not unknown, f"the test cannot read {unknown} in {line}"
        if all(tests[k](v) for k, v in opts.items() if k in tests):
            return opts["-j"]
    return next(line.split()[1] for line in filter_table if line.startswith(f":{chain} "))


def test_firewall_denies_all_but_what_the_lab_uses(monkeypatch):
    """The rendered rules, packet by packet: the gateway serves the internal networks DNS,
    DHCP, NTP and ICMP, SSH to the management network; it forwards between the internal
    networks and out, never to the management network or to the lab machine."""
    from tasks import gateway as gateway_stage
    monkeypatch.setattr(gateway_stage, "own_addresses",
                        lambda: [IPAddress("10.1.2.3"), IPAddress("192.168.121.1"),
                                 IPAddress("198.51.100.1")])
    plan = load_plan(DEFAULT_SPEC)
    rules = host_files(plan, plan.gateway)[RULES]
    (mast, node), mgmt = plan.networks[:2], plan.management
    client, leg = str(plan.host("kube-mast01").address), str(mast.gateway)
    outsider, lab_side = str(plan.outside), str(plan.management_host_ip)
    allowed = [("udp", 53), ("tcp", 53), ("udp", 67), ("udp", 123), ("icmp", None)]
    for proto, port in allowed:
        assert verdict(rules, "INPUT", client, leg, proto, port) == "ACCEPT", (proto, port)
    assert verdict(rules, "INPUT", "0.0.0.0", "255.255.255.255", "udp", 67, 68) == "ACCEPT"
    for port in (22, 80, 6443):
        assert verdict(rules, "INPUT", client, leg, "tcp", port) == "REJECT"
    assert verdict(rules, "INPUT", client, leg, "udp", 161) == "REJECT"
    assert verdict(rules, "INPUT", lab_side, str(plan.gateway.mgmt.address), "tcp", 22) \
        == "ACCEPT"
    assert verdict(rules, "INPUT", lab_side, str(plan.gateway.mgmt.address), "tcp", 53) \
        == "DROP"
    assert verdict(rules, "INPUT", lab_side, "192.168.121.50", "udp", 68, 67) == "ACCEPT"
    assert verdict(rules, "INPUT", outsider, leg, "tcp", 22, state="ESTABLISHED") == "ACCEPT"
    assert verdict(rules, "INPUT", outsider, leg, "tcp", 22) == "DROP"
    assert verdict(rules, "INPUT", leg, leg, "tcp", 22, local=[leg]) == "ACCEPT"

    out = str(node.cidr.ip + 7)
    assert verdict(rules, "FORWARD", client, out) == "ACCEPT"
    assert verdict(rules, "FORWARD", client, outsider) == "ACCEPT"
    assert verdict(rules, "FORWARD", client, "203.0.113.9", "udp", 53) == "ACCEPT"
    for denied in (lab_side, str(plan.host("glus01").mgmt.address), "10.1.2.3",
                   str(mast.host_ip), str(node.host_ip)):
        for state in ("NEW", "ESTABLISHED"):
            assert verdict(rules, "FORWARD", client, denied, state=state) == "REJECT", denied
    assert verdict(rules, "FORWARD", outsider, client) == "DROP"
    assert verdict(rules, "FORWARD", str(mgmt.ip + 11), client) == "DROP"
    assert verdict(rules, "FORWARD", outsider, client, state="ESTABLISHED") == "ACCEPT"
    # The lab machine's addresses in a lab network are the lab's to route; the outside
    # address it holds only during the NAT check.
    assert "-d 192.168.121.1/32" not in rules and f"-d {outsider}/32" not in rules


def test_nic_files_match_by_mac_and_only_the_gateway_is_static():
    plan = load_plan(DEFAULT_SPEC)
    for host in plan.hosts:
        for nic in host.nics:
            path = f"/etc/systemd/network/20-kubelab-{nic.network}.network"
            settings = lines(host_files(plan, host)[path])
            assert f"MACAddress={nic.mac}" in settings
            assert not [s for s in settings if s.startswith("Name=")]
            assert "RequiredForOnline=no" in settings
            static = f"Address={nic.address}/{nic.prefixlen}"
            if host.group == "gateway":
                assert static in settings and "DHCP=ipv4" not in settings
            else:
                assert "DHCP=ipv4" in settings and not [s for s in settings
                                                        if s.startswith("Address=")]


def test_resolver_and_time_come_from_the_gateway():
    plan = load_plan(DEFAULT_SPEC)
    for host in plan.hosts:
        files = host_files(plan, host)
        gateway = "127.0.0.1" if host.group == "gateway" else \
            str(plan.network(host.nics[0].network).gateway)
        assert lines(files["/etc/resolv.conf"]) == [f"nameserver {gateway}",
                                                     f"search {plan.domain}"]
        chrony = lines(files["/etc/chrony/chrony.conf"])
        if host.group == "gateway":
            assert {f"allow {n.cidr}" for n in plan.networks} <= set(chrony)
            assert not [c for c in chrony if c.startswith(("server", "pool"))]
        else:
            assert f"server {gateway} iburst" in chrony


# --- the deploy through the @fake connector ---------------------------------------------------

def links_json(host, with_addresses):
    links = [{"ifname": "lo", "address": "00:00:00:00:00:00", "link_type": "loopback"}]
    for nic in [host.mgmt, *host.nics]:
        up = with_addresses or nic.network == "mgmt"
        links.append({"ifname": nic.device, "address": nic.mac, "link_type": "ether",
                      "addr_info": [{"family": "inet", "local": str(nic.address),
                                     "prefixlen": nic.prefixlen}] if up else []})
    return json.dumps(links)


def block_devices(host, data_disk=None):
    """lsblk's answer on a VM: the root disk, and the storage hosts' data disk as given (an
    empty one by default)."""
    disks = [{"name": "vda", "path": "/dev/vda", "type": "disk", "size": 20 << 30,
              "children": [{"name": "vda1", "path": "/dev/vda1", "type": "part",
                            "size": 20 << 30, "fstype": "ext4", "mountpoint": "/"}]}]
    if host.data_disk:
        disks.append(data_disk or {"name": "vdb", "path": "/dev/vdb", "type": "disk",
                                   "size": host.data_disk << 30, "mountpoint": None})
    return json.dumps({"blockdevices": disks})


def fresh_host(host, virt):
    """What a host freshly up answers: nothing configured, services stopped."""
    return {"systemd-detect-virt": virt, "uname -s": "Linux", "lsblk -J": block_devices(host),
            "ip -j addr show": links_json(host, with_addresses=False),
            "ip -j -4 route show default": json.dumps(
                [{"dst": "default", "gateway": "192.0.2.1", "dev": host.mgmt.device}]),
            "sha256sum /var/lib/kubelab/": "1111  candidate",
            # Debian enables it together with networkd (Also=): the deploy disables it.
            "SubState systemd-networkd-wait-online.service": [
                "Id=systemd-networkd-wait-online.service", "UnitFileState=enabled"]}


def fake_deploy(tmp_path, spec, responses):
    """Run `pyinfra -y inventory deploy.py` on @fake hosts. Returns ([(op, host, command)]
    in execution order, with what operations note about a host as "note: ...", pyinfra's
    result totals)."""
    code, output = fake_run(tmp_path, spec, responses)
    assert code == 0, output[-3000:]
    return fake_events(output), totals(output)


def fake_run(tmp_path, spec, responses, *options):
    """(pyinfra's exit code, its output) of the deploy on @fake hosts, with pyinfra's
    `options`."""
    plan = load_plan(spec)
    hosts = []
    for host in plan.hosts:
        data = {**host_data(plan, host), "fake_delay": 0, "fake_delay_jitter": 0,
                "fake_responses": responses(host)}
        hosts.append([f"@fake/{host.name}", data])
    (tmp_path / "hosts.json").write_text(json.dumps(hosts))
    inventory = tmp_path / "fake_inventory.py"
    inventory.write_text("import json, pathlib\n"
                         "hosts = [tuple(h) for h in json.loads(pathlib.Path("
                         f"{str(tmp_path / 'hosts.json')!r}).read_text())]\n")
    run = subprocess.run([*pyinfra_command(), "-y", "-vv", *options, str(inventory),
                          DEPLOY], cwd=REPO, env={**os.environ, "KUBELAB_SPEC": str(spec)},
                         capture_output=True, text=True, timeout=120)
    return run.returncode, run.stdout + run.stderr


def fake_events(output):
    """[(op, host, command or "note: ...")] in execution order."""
    events, op = [], None
    for line in output.splitlines():
        if line.startswith("--> Starting operation: "):
            op = line.removeprefix("--> Starting operation: ").strip()
        match = re.match(r"^\[@fake/([^\]]+)\]\s+>>> (.*)$", line)
        if match and op:
            events.append((op, match.group(1), match.group(2)))
        # What an operation says about its host (noop: ..., a join's summary), as a note.
        note = re.match(r"^\s+\[@fake/([^\]]+)\] (?:noop|note): (.*)$", line)
        if note and op:
            events.append((op, note.group(1), f"note: {note.group(2)}"))
    return events


def commands(events, host):
    return [cmd for _, h, cmd in events if h == host]


@pytest.fixture(scope="module")
def vm_run(tmp_path_factory):
    return fake_deploy(tmp_path_factory.mktemp("vm"), SMALL, lambda h: fresh_host(h, "none"))


def test_a_deploy_until_a_stage_runs_that_stage_and_those_before_only(tmp_path):
    """`--data kubelab_until=loadbalancers` (`kubelab provision --until loadbalancers`): the
    stages up to the load balancers run, from the baseline on; no later stage starts."""
    code, output = fake_run(tmp_path, SMALL, lambda h: fresh_host(h, "none"),
                            "--data", f"{tasks.UNTIL}=loadbalancers")
    assert code == 0, output[-3000:]
    started = {m.group(1) for m in map(STAGE.match, output.splitlines()) if m}
    assert started == {stage.NAME for stage in tasks.stages_until("loadbalancers")}
    assert any(" install haproxy " in cmd for cmd in commands(fake_events(output), "hapx01"))


def test_gateway_is_serving_before_any_host_asks_for_dhcp(vm_run):
    events, _ = vm_run
    plan = load_plan(SMALL)
    start_dnsmasq = next(i for i, (_, h, cmd) in enumerate(events)
                         if h == plan.gateway.name and cmd == "systemctl start dnsmasq.service")
    for client in plan.hosts[1:]:
        dhcp = [i for i, (op, h, _) in enumerate(events)
                if h == client.name and "20-kubelab-" in op]
        assert dhcp and min(dhcp) > start_dnsmasq, client.name
    # ... and the gateway's own stage brought its legs up before it started dnsmasq.
    legs = [i for i, (op, h, _) in enumerate(events) if h == plan.gateway.name
            and op.startswith("Gateway | Write /etc/systemd/network")]
    assert legs and max(legs) < start_dnsmasq


def test_configs_are_checked_before_they_are_installed(vm_run):
    events, _ = vm_run
    gateway = commands(events, load_plan(SMALL).gateway.name)
    candidate = "/var/lib/kubelab/etc_dnsmasq.d_kubelab.conf"
    # dnsmasq checks the candidate with the rest of its conf-dir, in place of the live file.
    check = next(c for c in gateway if f"cp {candidate} " in c)
    assert "dnsmasq --test --conf-file=/etc/dnsmasq.conf --conf-dir=" in check
    assert f"; then install -m 0644 {candidate} {DNSMASQ}; else echo 'kubelab: {DNSMASQ}: " \
        "the new config was refused by its checker (dnsmasq --test" in check
    assert gateway.index(check) < gateway.index("systemctl start dnsmasq.service")
    assert any(c.startswith("if iptables-restore --test /var/lib/kubelab/") for c in gateway)
    assert "systemctl enable netfilter-persistent.service" in gateway


def test_vm_hosts_sync_time_and_load_modules(vm_run):
    events, _ = vm_run
    plan = load_plan(SMALL)
    for host in plan.hosts:
        cmds = commands(events, host.name)
        assert "systemctl start chrony.service" in cmds, host.name
        if host.group in ("masters", "workers"):
            assert "modprobe -a br_netfilter" in cmds and "modprobe -a overlay" in cmds
            assert "sysctl net.bridge.bridge-nf-call-iptables=1" in cmds
        if host.group == "gateway":
            assert "sysctl net.ipv4.ip_forward=1" in cmds
            assert "ip route del default dev eth0" not in cmds
        else:
            # The management NIC loses the default route; the gateway's DHCP gives it.
            assert "ip route del default dev eth0" in cmds
        assert "systemctl disable systemd-networkd-wait-online.service" in cmds


def test_containers_leave_clock_and_modules_to_the_lab_machine(tmp_path):
    def container(host):
        # Only the namespaced key exists: the lab machine has no br_netfilter loaded.
        return {"sysctl net.ipv4.ip_forward": "net.ipv4.ip_forward = 0",
                **fresh_host(host, "systemd-nspawn")}

    events, _ = fake_deploy(tmp_path, SMALL, container)
    every = [cmd for _, _, cmd in events]
    assert not [c for c in every if "chrony.service" in c or "/etc/chrony" in c
                or c.startswith("modprobe")]
    # net.bridge.* does not exist in these containers (no fake answer for it): asked, not set.
    assert not [c for c in every if re.match(r"sysctl net\.bridge\.\S+=", c)]
    assert "sysctl net.ipv4.ip_forward=1" in commands(events, load_plan(SMALL).gateway.name)


@pytest.mark.parametrize("changed", [False, True], ids=["same config", "new config"])
def test_services_restart_only_when_their_config_changed(tmp_path, changed):
    plan = load_plan(SMALL)

    def configured(host):
        running = {f"SubState {s}.service": [f"Id={s}.service", "SubState=running"]
                   for s in ("dnsmasq", "netfilter-persistent", "systemd-networkd", "chrony")}
        fresh = fresh_host(host, "none")
        if not changed:     # candidates and installed configs alike: nothing to install
            del fresh["sha256sum /var/lib/kubelab/"]
        return {**running, **fresh, "sha256sum": "2222  installed"}

    events, _ = fake_deploy(tmp_path, SMALL, configured)
    gateway = commands(events, plan.gateway.name)
    assert "systemctl enable dnsmasq.service" in gateway      # the deploy ran on the gateway
    for service, check in (("dnsmasq", "dnsmasq --test"),
                           ("netfilter-persistent", "iptables-restore --test")):
        restarts = [c for c in gateway if c == f"systemctl restart {service}.service"]
        checks = [c for c in gateway if c.startswith("if ") and check in c]
        assert (len(restarts), len(checks)) == ((1, 1) if changed else (0, 0)), service


def test_a_service_older_than_its_config_restarts(tmp_path):
    """A run stopped between writing a config and restarting its service leaves the service
    older than its config: the next run restarts it, though nothing changes now."""
    plan = load_plan(SMALL)

    def interrupted(host):
        running = {f"SubState {s}.service": [f"Id={s}.service", "SubState=running"]
                   for s in ("dnsmasq", "netfilter-persistent", "systemd-networkd", "chrony")}
        fresh = fresh_host(host, "none")
        del fresh["sha256sum /var/lib/kubelab/"]
        return {"ActiveEnterTimestamp --value dnsmasq": "stale", **running, **fresh,
                "sha256sum": "2222  installed"}

    events, _ = fake_deploy(tmp_path, SMALL, interrupted)
    gateway = commands(events, plan.gateway.name)
    assert gateway.count("systemctl restart dnsmasq.service") == 1
    assert "systemctl restart netfilter-persistent.service" not in gateway
    assert not [c for c in gateway if "--test" in c]      # nothing checked or installed again
