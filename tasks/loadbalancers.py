"""The load balancers: HAProxy in front of the masters' API on every load balancer, and the
API's virtual IP held by corosync 3 + pacemaker on one of them.

Install -> configure (HAProxy's and corosync's configs checked by their own tools before
they replace the old ones) -> activate (HAProxy reloads on change; corosync, pacemaker and
HAProxy start at boot) -> the cluster's resources, loaded once from the chosen load balancer
when they differ from what it last loaded.

Debian's corosync package starts a one-node cluster ("debian") on install where its
services may start (a VM installing it itself; the image keeps them off): the first run
stops it and clears its cluster configuration before the real cluster forms.
One load balancer makes a one-node cluster (the plan warns: no failover); more than two
keep quorum by majority (two_node only for a pair).
"""
import base64
import hashlib
from io import StringIO

from pyinfra import host
from pyinfra.api import OperationError, operation
from pyinfra.api.command import FileUploadCommand
from pyinfra.facts.server import Command
from pyinfra.operations import server, systemd

from kubelab.facts import Links
from kubelab.render import render
from tasks.helpers import (CANDIDATES, chosen, install_checked, publish, put, render_files,
                           restart_if_changed, retry_for, shared, unit_state)

NAME = "Load balancers"
GROUPS = ("loadbalancers",)
PACKAGES = ["haproxy", "pacemaker", "corosync", "crmsh", "resource-agents"]
# The VIP is bound by HAProxy on every node; only the node holding it answers.
SYSCTLS = {"net.ipv4.ip_nonlocal_bind": "1"}
HAPROXY = "/etc/haproxy/haproxy.cfg"
COROSYNC = "/etc/corosync/corosync.conf"
AUTHKEY = "/etc/corosync/authkey"
COROSYNC_WAIT = "/etc/systemd/system/corosync.service.d/kubelab.conf"
FILES = {HAPROXY: "loadbalancers/haproxy.cfg.j2", COROSYNC: "loadbalancers/corosync.conf.j2",
         COROSYNC_WAIT: "loadbalancers/corosync-wait.conf.j2"}
# Not in files_for (so not in `kubelab render`): the authkey (binary, the lab secret
# decoded), and the cluster's resources (rendered when the deploy runs: each node's NIC is
# found by MAC on that node), with the digest of the configuration last loaded from it.
CLUSTER = "/etc/kubelab/cluster.crm"
LOADED = f"{CANDIDATES}/cluster.crm.loaded"
CLUSTER_TEMPLATE = "loadbalancers/cluster.crm.j2"
# What marks a corosync.conf as the deploy's (and not the package's one-node cluster).
OURS = "# kubelab:"
# Seconds the chosen node waits for every load balancer to join, then for the resources
# to settle after a load.
FORM_SECONDS = 120
SETTLE_SECONDS = 120


def network(plan):
    """The load balancers' network (the VIP's)."""
    return plan.group("loadbalancers")[0].nics[0].network


def files_for(plan, me, secrets):
    return render_files(FILES, plan=plan, me=me, secrets=secrets, network=network(plan),
                        nodes=plan.group("loadbalancers"))


def cluster_config(plan, nics):
    """The pacemaker configuration, given {node name: its NIC on the VIP's network}."""
    return render(CLUSTER_TEMPLATE, plan=plan, nics=nics,
                  prefixlen=plan.network(network(plan)).cidr.prefixlen)


def nic_name(node, net):
    """`node`'s NIC on network `net`, found by its MAC in the links `node` published."""
    links = Links().process(shared(f"links of {node.name}").splitlines())
    mac = node.nic(net).mac
    if mac not in links:
        raise OperationError(f"{node.name} has no NIC with MAC {mac}: the provider did not "
                             "create the NIC the plan gives it (re-create the host)")
    return links[mac]["name"]


def deploy(plan, me, secrets):
    rendered = files_for(plan, me, secrets)
    haproxy = install_checked(HAPROXY, rendered[HAPROXY], "haproxy -c -f")
    restart_if_changed("haproxy", haproxy, reload=True)

    server.shell(name="Stop Debian's one-node cluster and clear its configuration",
                 commands=["systemctl stop pacemaker corosync",
                           f"rm -f /var/lib/pacemaker/cib/cib* {LOADED}"],
                 _if=lambda: OURS not in (host.get_fact(
                     Command, command=f"head -1 {COROSYNC} 2>/dev/null || true") or ""))
    authkey = put(AUTHKEY, base64.b64decode(secrets["corosync_authkey"]), mode="0400")
    wait = put(COROSYNC_WAIT, rendered[COROSYNC_WAIT])
    systemd.daemon_reload(name="systemd reads corosync's drop-in", _if=wait.did_change)
    corosync = install_checked(COROSYNC, rendered[COROSYNC], "corosync -t -c")
    restart_if_changed("corosync", corosync, authkey)
    unit_state(name="Run pacemaker now and at boot", service="pacemaker", running=True,
               enabled=True)

    first = chosen(plan, "loadbalancers")
    for node in plan.group("loadbalancers"):
        publish(name=f"{node.name}: its links (its NIC on {network(plan)} by MAC)",
                key=f"links of {node.name}", command=Links().command(), chosen_host=node)
    if me.name == first.name:
        nodes = plan.group("loadbalancers")
        load_cluster_config(name=f"Cluster resources (from {first.name})",
                            text=lambda: cluster_config(
                                plan, {n.name: nic_name(n, network(plan)) for n in nodes}),
                            members=len(nodes))


@operation()
def load_cluster_config(text, members):
    """Load the resources text() renders into the cluster (crmsh `configure load update`:
    what the file names is made as written, the rest of the CIB is left alone), check the
    result with crm_verify and wait until it has settled. Nothing runs while the CIB holds
    the resources and what was last loaded is the same text."""
    text = text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    state = (host.get_fact(Command, command=(
        f"cat {LOADED} 2>/dev/null; cibadmin --query --scope resources 2>/dev/null | "
        "grep -c 'id=\"api-vip\"' || true")) or "").split()
    if state == [digest, "1"]:
        host.noop("the cluster holds this configuration")
        return
    yield f"mkdir -p {CLUSTER.rpartition('/')[0]}"
    yield FileUploadCommand(StringIO(text), CLUSTER)
    # Every node online, a controller elected with quorum, before the resources are placed
    # (crm_mon reads the status and returns; crmadmin -D would wait for a controller forever).
    yield retry_for(FORM_SECONDS, (
        "s=$(timeout 10 crm_mon -1 --output-as=xml 2>/dev/null); echo \"$s\" | grep -q "
        "'<current_dc present=\"true\".* with_quorum=\"true\"' && "
        f"[ \"$(echo \"$s\" | grep -c ' online=\"true\"')\" = {members} ]"),
        f"the load balancers did not all join the cluster in {FORM_SECONDS} s: see crm_mon -1, "
        "corosync-cfgtool -s")
    yield f"crm configure load update {CLUSTER}"
    yield "crm_verify -L"
    yield f"crm_resource --wait --timeout={SETTLE_SECONDS}s"
    yield f"echo {digest} > {LOADED}"
