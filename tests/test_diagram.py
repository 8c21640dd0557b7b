"""The network diagram is a well-formed SVG showing every network and host of the plan."""
import xml.etree.ElementTree as ET

import pytest

from kubelab.diagram import svg
from kubelab.paths import DEFAULT_SPEC, REPO
from kubelab.plan import load_plan


@pytest.mark.parametrize("spec", [DEFAULT_SPEC, REPO / "examples/large.yaml"])
def test_diagram_shows_every_network_and_host(spec):
    plan = load_plan(spec)
    root = ET.fromstring(svg(plan))
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    for net in plan.networks:
        assert f"{net.name} {net.cidr}" in texts
        assert f"DHCP {net.dhcp}" in texts
    for host in plan.hosts:
        if host.group != "gateway":
            assert f"{host.name}  {host.address}" in texts
    assert f"API VIP {plan.api_vip}:{plan.api_port}" in texts
    assert f"MetalLB {plan.metallb_pool}" in texts
    height = int(root.get("height"))
    rects = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("y")]
    assert all(int(r.get("y")) + int(r.get("height")) <= height for r in rects)
