"""The 2019 design's "Networking Diagram", drawn from the plan as an SVG image: the outside and
the gateway on top, one column per internal network with its ranges and its hosts."""
from dataclasses import dataclass

from kubelab.render import render

COLUMN_WIDTH, GAP, HOST_HEIGHT, TOP = 270, 30, 44, 250
COLORS = ["#2a9d8f", "#e76f51", "#7b2cbf", "#264653", "#e9c46a", "#8ab17d"]


@dataclass
class Column:
    x: int
    color: str
    network: object
    notes: list        # extra lines under the network header (VIP, MetalLB pool)
    hosts: list        # (name, address)


def _notes(plan, network):
    notes = [f"gateway/DNS {network.gateway}", f"DHCP {network.dhcp}"]
    if plan.api_vip in network.cidr:
        notes.append(f"API VIP {plan.api_vip}:{plan.api_port}")
    if plan.metallb_pool.first in network.cidr:
        notes.append(f"MetalLB {plan.metallb_pool}")
    return notes


def columns(plan):
    cols = []
    for i, net in enumerate(plan.networks):
        hosts = [(h.name, str(h.nic(net.name).address)) for h in plan.hosts_on(net.name)]
        cols.append(Column(GAP + i * (COLUMN_WIDTH + GAP), COLORS[i % len(COLORS)], net,
                           _notes(plan, net), hosts))
    return cols


def svg(plan):
    cols = columns(plan)
    width = GAP + len(cols) * (COLUMN_WIDTH + GAP)
    tallest = max((len(c.hosts) for c in cols), default=0)
    height = TOP + 110 + tallest * HOST_HEIGHT + GAP
    return render("diagram/network.svg.j2", plan=plan, columns=cols, width=width, height=height,
                  column_width=COLUMN_WIDTH, host_height=HOST_HEIGHT, top=TOP)
