"""Where a lab's hosts run: one interface over the container lab (kubelab.nspawn) and
Vagrant's VMs (kubelab.vagrant, with virtualbox or libvirt), and which of them a command
uses.

Every provider has preflight(plan) (problems that stop `up`, each with its fix),
notes(plan), up(plan, hosts) (returns the ssh config it wrote), status(plan),
destroy(plan), and for the failure drills power_cut(plan, host) and power_on(plan, host)
(the caller waits for its SSH).
"""
from kubelab import nspawn, vagrant
from kubelab.errors import LabError
from kubelab.paths import lab_provider, provider_file


class Containers:
    """Every host a systemd-nspawn container."""
    name = "nspawn"

    def preflight(self, plan):
        return nspawn.preflight(plan)

    def notes(self, plan):
        return []

    def up(self, plan, hosts=None):
        return nspawn.up(plan, hosts)

    def status(self, plan):
        return nspawn.status(plan)

    def destroy(self, plan):
        nspawn.destroy(plan)

    def power_cut(self, plan, host):
        nspawn.kill_host(plan, host)

    def power_on(self, plan, host):
        nspawn.start_host(plan, host)


class VMs:
    """Every host a VM, made by Vagrant with one of its providers."""

    def __init__(self, name):
        self.name = name

    def preflight(self, plan):
        return vagrant.preflight(plan, self.name)

    def notes(self, plan):
        return vagrant.notes(plan, self.name)

    def up(self, plan, hosts=None):
        return vagrant.up(plan, self.name, hosts)

    def status(self, plan):
        return vagrant.status(plan, self.name)

    def destroy(self, plan):
        vagrant.destroy(plan, self.name)

    def power_cut(self, plan, host):
        self._drills_need_libvirt()
        vagrant.kill_host(plan, host)

    def power_on(self, plan, host):
        self._drills_need_libvirt()
        vagrant.start_host(plan, host)

    def _drills_need_libvirt(self):
        if self.name != "libvirt":
            raise LabError(f"failure drills cut the power of containers and libvirt VMs; "
                           f"on {self.name}, power a VM off by hand and watch the checks")


PROVIDERS = {p.name: p for p in [*map(VMs, vagrant.VM_PROVIDERS), Containers()]}


def management_side(plan):
    """The command prefix that runs a program on this machine's side of the lab's management
    network: inside the container lab's namespace, else (VMs) in this machine's own
    namespace once the routes to the lab are checked to stay on its own bridge. A container
    lab whose namespace is gone is an error, never a fall back to this machine's network."""
    netns = nspawn.lab_netns(plan)
    if nspawn.netns_exists(netns):
        return ["ip", "netns", "exec", netns]
    if lab_provider(plan) == "nspawn":
        raise LabError(f"container lab {plan.name} has no network namespace {netns}: it is not "
                       "up; bring it up with `kubelab up`")
    vagrant.check_routes(plan)
    return []


def resolve(plan, requested=None):
    """The provider of a command: the one the lab was brought up with, else the requested
    one (--provider), else the spec's default. Asking for another than the lab has is an
    error naming both."""
    recorded = lab_provider(plan)
    if recorded and requested and requested != recorded:
        raise LabError(f"lab {plan.name} was brought up with {recorded} (recorded in "
                       f"{provider_file(plan)}), not {requested}: leave out --provider to "
                       f"use {recorded}; {requested} needs the lab destroyed first")
    return PROVIDERS[recorded or requested or plan.default_provider]
