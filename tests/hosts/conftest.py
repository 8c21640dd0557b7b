"""Checks of running lab hosts (testinfra over SSH).

    pytest tests/hosts --hosts=ssh://gateway,ssh://hapx01 --ssh-config=.kubelab/LAB/ssh_config
    kubelab verify        (the same, for every host the lab brought up)

They run in parallel across hosts (pytest-xdist; -n 0 runs them in this process).

--hosts names the hosts that are up (default: every planned host); the plan of $KUBELAB_SPEC
says what each one is, and each check is generated only for the hosts it applies to.
--until=STAGE asks only the checks of the deploy stages up to STAGE (a lab deployed with
`kubelab provision --until STAGE`).
They need a running lab, so the unit test run (`pytest` from the top) does not collect them;
tests/test_gateway_lab.py runs them on a container lab it brings up.
"""
import os
from pathlib import Path

import pytest
from hostutil import Listeners
from outside import release_outside
from shell import ShellBackend
from testinfra.host import Host

from kubelab.inventory import bring_up_hint, checks_connection, reachable
from kubelab.paths import spec_path, ssh_config
from kubelab.plan import load_plan
from kubelab.provision import check_workers
from tasks import stage_names, stages_until
from tasks.helpers import chosen, stage_name

HERE = Path(__file__).parent.resolve()
# The stage after which a check file can pass: its own (test_<stage>.py), or the last of the
# later stages it checks too.
CHECKED_AFTER = {"test_storage.py": "storage_clients", "test_kubernetes.py": "addons"}


def pytest_addoption(parser):
    parser.addoption("--until", metavar="STAGE", choices=stage_names(),
                     help="only the checks of the deploy stages up to STAGE")


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path).resolve()
    if not _asked(config) and HERE in path.parents:
        return True
    until = config.getoption("until", None)
    if until and path.parent == HERE and path.name.startswith("test_"):
        stage = CHECKED_AFTER.get(path.name, path.stem.removeprefix("test_"))
        later = set(stage_names()) - {stage_name(s) for s in stages_until(until)}
        return stage in later or None
    return None


def _asked(config):
    """The command line names these checks (or some of them)."""
    return any(HERE == p or HERE in p.parents
               for p in (Path(str(a).split("::")[0]).resolve() for a in config.args))


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """The checks run in parallel across hosts (pytest-xdist workers, as many as
    check_workers gives for the hosts asked) unless -n says otherwise; before xdist reads -n."""
    if config.option.numprocesses is None and not hasattr(config, "workerinput"):
        config.option.numprocesses = check_workers(len(up_hosts(config, _plan())))
        if config.option.numprocesses and config.option.dist == "no":
            config.option.dist = "loadgroup"    # a host's checks on one worker: see below


def pytest_configure_node(node):
    """(xdist, on the controller) A worker parses the command line again, where the
    loadgroup chosen above is not: tell it. And which run it is part of (outside.py)."""
    node.workerinput["kubelab_loadgroup"] = node.config.option.dist == "loadgroup"
    node.workerinput["kubelab_run"] = os.getpid()


def pytest_configure(config):
    if getattr(config, "workerinput", {}).get("kubelab_loadgroup"):
        config.option.loadgroup = True


def pytest_unconfigure(config):
    """The run's controller (or its only process) removes the NAT check's outside address."""
    if not hasattr(config, "workerinput") and _asked(config):
        release_outside(_plan(), os.getpid())


def _plan():
    return load_plan(spec_path())


def ssh_config_file(config, plan):
    return Path(config.option.ssh_config or ssh_config(plan))


def up_hosts(config, plan):
    """The planned hosts named by --hosts (ssh://name, user@name or name), in plan order.
    Each must be reachable: an existing machine of the spec, or in the ssh config."""
    if not config.option.hosts:
        names = {h.name for h in plan.hosts}
    else:
        names = {spec.split("://")[-1].split("?")[0].split("@")[-1].strip()
                 for spec in config.option.hosts.split(",")}
        unknown = names - {h.name for h in plan.hosts}
        if unknown:
            raise pytest.UsageError(f"--hosts: {', '.join(sorted(unknown))} not in the plan of "
                                    f"{spec_path()}; set KUBELAB_SPEC to the lab's spec")
    path = ssh_config_file(config, plan)
    missing = names - reachable(plan, path)
    if missing:
        raise pytest.UsageError(
            f"{', '.join(h.name for h in plan.hosts if h.name in missing)}: not in the ssh "
            f"config {path} (not up?). {bring_up_hint(path)}, or name only the hosts that are "
            "up with --hosts")
    return [h for h in plan.hosts if h.name in names]


def clients(config, plan):
    """Up hosts that take their internal address from the gateway's DHCP."""
    return [h for h in up_hosts(config, plan) if h.group != "gateway"]


def vip_clients(config, plan):
    """Up clients on another network than the up load balancers' (they reach the API's VIP
    through the gateway); none when no load balancer is up to hold it."""
    up = up_hosts(config, plan)
    lb_networks = {h.nics[0].network for h in up if h.group == "loadbalancers"}
    return [h for h in clients(config, plan)
            if lb_networks and h.nics[0].network not in lb_networks]


def other_network_peers(config, plan):
    """(client, peer): for each up client, an up client on another internal network."""
    up = clients(config, plan)
    pairs = []
    for me in up:
        peer = next((h for h in up if h.nics[0].network != me.nics[0].network), None)
        if peer:
            pairs.append((me, peer))
    return pairs


# Fixtures that stand for each up host of some groups: a check that takes one runs once per
# such host (a stage's checks take the fixture of the groups the stage applies to).
GROUP_FIXTURES = {"router": ("gateway",), "balancer": ("loadbalancers",),
                  "storage_host": ("storage",), "kube_host": ("masters", "workers")}


def pytest_generate_tests(metafunc):
    """Parametrize from the plan and --hosts: the GROUP_FIXTURES, `client` (a host that
    takes its address from the gateway), `vip_client` (one on another network than the load
    balancers'), `source` (any up host), `pair` and `network`
    (every internal network)."""
    names = set(metafunc.fixturenames)
    if not {"client", "vip_client", "first_master", "pool_member", "pool_client", "source",
            "pair", "network", *GROUP_FIXTURES} & names:
        return
    config, plan = metafunc.config, _plan()
    for fixture, groups in GROUP_FIXTURES.items():
        if fixture in names:
            hosts = [h for h in up_hosts(config, plan) if h.group in groups]
            metafunc.parametrize(fixture, hosts, ids=[h.name for h in hosts])
    if "client" in names:
        hosts = clients(config, plan)
        metafunc.parametrize("client", hosts, ids=[h.name for h in hosts])
    if {"pool_member", "pool_client"} & names:
        # The pool is made by a run that holds every storage host (tasks/storage.py): its
        # checks, and its clients', are asked only when all of them are up.
        up = up_hosts(config, plan)
        whole = all(h in up for h in plan.group("storage"))
        for fixture, group in (("pool_member", "storage"), ("pool_client", "kubernetes")):
            if fixture in names:
                hosts = [h for h in plan.group(group) if whole and h in up]
                metafunc.parametrize(fixture, hosts, ids=[h.name for h in hosts])
    if "first_master" in names:     # the cluster's own checks ask it, once per module
        hosts = [h for h in up_hosts(config, plan) if h == chosen(plan, "masters")]
        metafunc.parametrize("first_master", hosts, ids=[h.name for h in hosts], scope="module")
    if "vip_client" in names:
        hosts = vip_clients(config, plan)
        metafunc.parametrize("vip_client", hosts, ids=[h.name for h in hosts])
    if "source" in names:
        hosts = up_hosts(config, plan)
        metafunc.parametrize("source", hosts, ids=[h.name for h in hosts])
    if "pair" in names:
        pairs = other_network_peers(config, plan)
        metafunc.parametrize("pair", pairs, ids=[f"{a.name}->{b.name}" for a, b in pairs])
    if "network" in names:
        metafunc.parametrize("network", plan.networks, ids=[n.name for n in plan.networks])


@pytest.fixture(scope="session")
def plan():
    return _plan()


@pytest.fixture(scope="session")
def connect(request, plan):
    """connect(host) -> a testinfra host over SSH (root through sudo), one per host, reached
    the way inventory.py reaches it; its commands go through one shell (shell.py)."""
    config = ssh_config_file(request.config, plan)
    cache = {}

    def get(host):
        if host.name not in cache:
            url, options = checks_connection(plan, host, config)
            backend = ShellBackend(url.removeprefix("ssh://"), sudo=True, **options)
            cache[host.name] = Host(backend)
            backend.set_host(cache[host.name])
        return cache[host.name]
    yield get
    for each in cache.values():
        each.backend.close()


@pytest.fixture(scope="session")
def run(request):
    """This run of the checks: its controller's pid (the only process's without xdist)."""
    return getattr(request.config, "workerinput", {}).get("kubelab_run", os.getpid())


@pytest.fixture(scope="session")
def listeners(connect):
    """Listeners shared by this process's checks (hostutil.Listeners), killed at its end
    (before the hosts' shells close)."""
    started = Listeners()
    yield started
    started.close()


@pytest.fixture(scope="session")
def gateway(plan, connect):
    """The gateway's testinfra host: client checks read its DHCP leases."""
    return connect(plan.gateway)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A check whose hosts are none of the up ones (no load balancer up, say) is left out,
    not skipped: it was never asked. The checks of a host go to one xdist worker (with
    --dist loadgroup), which then opens one shell to it (shell.py), not one per worker."""
    empty = [item for item in items
             if any(str(m.kwargs.get("reason", "")).startswith("got empty parameter set")
                    for m in item.iter_markers("skip"))]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [item for item in items if item not in empty]
    plan = _plan()
    for item in items:
        host = _first_host(item.nodeid, plan)
        if host:
            item.add_marker(pytest.mark.xdist_group(host))


# A check skipped everywhere proves nothing: a group whose checks were all skipped fails the
# run (its hosts are up, so something there is wrong or the check cannot see it).
_outcomes = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or report.skipped:
        _outcomes.setdefault(report.nodeid, report.outcome)


def _first_host(nodeid, plan):
    """The planned host a check's id names first (`[kube-node01]`, `[gateway-mast]`,
    `[a->b]`; xdist's loadgroup adds `@group`), or None."""
    ids = nodeid.split("@")[0].rpartition("[")[2].rstrip("]").split("->")[0].split("-")
    names = {h.name for h in plan.hosts}
    for size in range(len(ids), 0, -1):
        name = "-".join(ids[:size])
        if name in names:
            return name
    return None


def _group_of(nodeid, plan):
    host = _first_host(nodeid, plan)
    return plan.host(host).group if host else None


def pytest_sessionfinish(session, exitstatus):
    if exitstatus != 0 or not _outcomes:
        return
    plan, by_group = _plan(), {}
    for nodeid, outcome in _outcomes.items():
        group = _group_of(nodeid, plan)
        if group:
            by_group.setdefault(group, set()).add(outcome)
    skipped = sorted(g for g, outcomes in by_group.items() if outcomes == {"skipped"})
    if skipped:
        session.config.get_terminal_writer().line(
            f"kubelab: every check of group(s) {', '.join(skipped)} was skipped: that proves "
            "nothing about those hosts (see the skip reasons above)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
