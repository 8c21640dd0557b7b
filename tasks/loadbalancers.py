"""The load balancers: HAProxy in front of the masters, the API's virtual IP held by
corosync + pacemaker. So far: their packages."""

NAME = "Load balancers"
GROUPS = ("loadbalancers",)
PACKAGES = ["haproxy", "pacemaker", "corosync", "crmsh", "resource-agents"]


def files_for(plan, me, secrets):
    return {}
