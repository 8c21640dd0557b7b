"""Small helpers the host checks share."""
import json


def run_ok(host, command):
    result = host.run(command)
    assert result.rc == 0, f"{command!r} failed (rc {result.rc}): {result.stderr.strip()}"
    return result.stdout


def links(host):
    """{mac: (ifname, [addresses])} of the host."""
    data = json.loads(run_ok(host, "ip -j addr show"))
    return {link["address"]: (link["ifname"],
                              [a["local"] for a in link.get("addr_info", [])
                               if a["family"] == "inet"])
            for link in data if link.get("link_type") == "ether"}
