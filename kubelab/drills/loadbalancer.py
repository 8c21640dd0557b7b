"""Drill: the API's load balancers under failure, as a client of the API sees it.

A client on a host of another network asks https://VIP:port/readyz every 100 ms (each
request on a new connection, 1 s to connect, its start time and result printed). Meanwhile:
1. the node holding the VIP loses its power: the outage until requests succeed again;
2. it is powered on and rejoins: the VIP must stay where it is (no flap, no failed request;
   a failed request is counted at the VIP when no load balancer took its connection);
3. the VIP is moved cleanly (its node put in standby, then back online): that outage;
4. one master's API port starts refusing: how long HAProxy takes to mark it down, and the
   requests that fail meanwhile (all of them after it, when it was the only master).

Kubernetes does not run here yet: where no API server answers, a TLS stand-in answering
/readyz runs on each master's API port for the drill (removed afterwards; the deploy never
installs it).
"""
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

from kubelab.drills import DrillError, power_cut, power_on, ssh_command, up, wait_until
from kubelab.drills import run as on_host
from kubelab.secrets import lab_secrets

INTERVAL = 0.1          # seconds between the client's requests
CLIENT_SECONDS = 900    # the client stops by itself after this (the drill stops it sooner)
BASELINE = 3            # seconds of requests before each step
SETTLE = 5              # seconds of requests after each step has settled
WAIT = 120              # seconds for a step's effect at most
GOALS = {"hard_kill_outage_s": 5.0, "clean_move_outage_s": 1.0, "failed_after_recovery": 0,
         "flaps": 0}
STANDIN_DIR = "/run/kubelab-api-stand-in"
STANDIN_UNIT = "kubelab-api-stand-in"

CLIENT = r"""
import http.client, os, socket, ssl, sys, threading, time
vip, port, interval, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
context = ssl._create_unverified_context()
lock = threading.Lock()
print(f"clock {time.time():.3f}", flush=True)
# Why a request failed: "vip:" no load balancer took the connection (no node held the VIP,
# or it was moving); "backend:" HAProxy took it and no master answered behind it.
def probe(start):
    try:
        # 1 s to reach the VIP (a SYN lost to a dead node is not retried within it); the
        # TLS request behind it may take longer on a busy machine.
        sock = socket.create_connection((vip, port), timeout=1)
    except Exception as err:
        answer(start, False, f"vip:{type(err).__name__}")
        return
    try:
        sock.settimeout(5)
        conn = http.client.HTTPSConnection(vip, port, context=context)
        conn.sock = context.wrap_socket(sock, server_hostname=vip)
        conn.request("GET", "/readyz")
        status = conn.getresponse().status
        conn.close()
        answer(start, status == 200, f"backend:{status}")
    except Exception as err:
        answer(start, False, f"backend:{type(err).__name__}")
def answer(start, ok, what):
    with lock:
        try:
            print(f"{start:.3f} {int(ok)} {what}", flush=True)
        except OSError:     # the drill is gone (its SSH session closed): so is the client
            os._exit(0)
due, end = time.time(), time.time() + seconds
while time.time() < end:
    threading.Thread(target=probe, args=(time.time(),), daemon=True).start()
    due += interval
    time.sleep(max(0.0, due - time.time()))
"""

# The stand-in: TLS with a self-signed certificate, 200 on GET /readyz, nothing else.
STANDIN = r"""
import http.server, ssl, sys
address, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = self.path == "/readyz"
        body = b"ok (kubelab API stand-in)" if ready else b"not found"
        self.send_response(200 if ready else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128        # the default 5 drops SYNs from a burst after a failover
    def get_request(self):
        conn, peer = self.socket.accept()
        conn.settimeout(5)
        return context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), peer
Server((address, port), Handler).serve_forever()
"""


class Client:
    """The requests of the client, read as they come: results [(start, ok)], and why each
    failed request failed, {start: what}. Start times are on this machine's clock: a VM's
    own clock may be seconds off it, so the client says its time first, and the offset
    (late by the output's latency, milliseconds) is applied to every request's."""

    def __init__(self, plan, host):
        self.results = []
        self.why = {}
        self.offset = None
        self.proc = subprocess.Popen(
            ssh_command(plan, host, f"python3 -u - {plan.api_vip} {plan.api_port} {INTERVAL} "
                        f"{CLIENT_SECONDS}", shared=False),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc.stdin.write(CLIENT)
        self.proc.stdin.close()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            first, rest = line.split(" ", 1)
            if first == "clock":
                self.offset = time.time() - float(rest)
                continue
            ok, what = rest.split(" ", 1)
            start = float(first) + self.offset
            self.results.append((start, ok == "1"))
            if ok != "1":
                self.why[start] = what.strip()

    def since(self, t):
        return sorted(r for r in list(self.results) if r[0] >= t)

    def wait(self, done, what, timeout=WAIT):
        """Wait until done(self) holds; DrillError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DrillError(f"the client stopped: {self.proc.stderr.read()[-500:]}")
            if done(self):
                return
            time.sleep(0.2)
        raise DrillError(f"{what} within {timeout} s")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def outage(results):
    """Seconds of the longest run of failed requests: from its first failure to the next
    success, or to the last request for a run still going (0: none failed)."""
    longest, first = 0.0, None
    for t, ok in results:
        if not ok and first is None:
            first = t
        elif ok and first is not None:
            longest, first = max(longest, t - first), None
    if first is not None:
        longest = max(longest, results[-1][0] - first)
    return round(longest, 2)


def recovered(since, successes=5):
    """done(client): a request from `since` on failed, and the last `successes` succeeded."""
    def done(client):
        results = client.since(since)
        return (any(not ok for _, ok in results) and len(results) >= successes
                and all(ok for _, ok in results[-successes:]))
    return done


def steady(seconds, now=time.time):
    """done(client): requests ran for `seconds` and each of the last `seconds` succeeded."""
    def done(client):
        start = now() - seconds
        window = client.since(start)
        return bool(window) and client.results[0][0] <= start and all(ok for _, ok in window)
    return done


def vip_holder(plan, asked):
    out = on_host(plan, asked, "crm_resource --locate --resource api-vip").stdout
    names = [h.name for h in plan.group("loadbalancers") if f"running on: {h.name}" in out]
    return plan.host(names[0]) if len(names) == 1 else None


def holding(plan, lbs):
    """The names of the load balancers holding the VIP's address now."""
    return tuple(h.name for h in lbs if on_host(
        plan, h, f"ip -4 -o addr show | grep -q ' inet {plan.api_vip}/'", check=False)
        .returncode == 0)


def client_host(plan):
    """A host that is up on another network than the load balancers' (through the
    gateway); a master, whose API it measures, only when no other is up."""
    lb_network = plan.group("loadbalancers")[0].nics[0].network
    for host in up(plan, "workers") + up(plan, "storage") + up(plan, "masters"):
        if host.nics[0].network != lb_network:
            return host
    raise DrillError("no host up outside the load balancers' network to run the client on")


def start_standins(plan, timeline):
    """A stand-in on every master that is up and has no listener on its API port; returns
    those masters."""
    started = []
    for master in up(plan, "masters"):
        if on_host(plan, master, f"ss -Hltn 'sport = :{plan.api_port}'").stdout.strip():
            continue
        on_host(plan, master, f"mkdir -p {STANDIN_DIR} && cd {STANDIN_DIR} && "
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            "-days 1 -subj /CN=kubelab-api-stand-in -keyout key.pem -out cert.pem "
            f"2>/dev/null && cat > stand-in.py <<'EOF'\n{STANDIN}\nEOF\n"
            f"systemd-run --quiet --collect --unit={STANDIN_UNIT} python3 "
            f"{STANDIN_DIR}/stand-in.py {master.address} {plan.api_port} "
            f"{STANDIN_DIR}/cert.pem {STANDIN_DIR}/key.pem")
        started.append(master)
    if started:
        timeline.mark("no API server answers: started the API stand-in (python3 TLS, "
                      f"/readyz only) on {', '.join(m.name for m in started)}")
    return started


def stop_standins(plan, masters):
    for master in masters:
        on_host(plan, master, f"systemctl stop {STANDIN_UNIT}; rm -rf {STANDIN_DIR}",
                check=False)


def server_down_seen(plan, balancer, master, timeout=WAIT):
    """Wait on `balancer` until HAProxy marks `master` DOWN; returns when this machine
    learnt it (on its own clock, not the balancer's: late by one SSH reply)."""
    on_host(plan, balancer, (
        f"timeout {timeout} sh -c 'until echo \"show stat\" | nc -U /run/haproxy/admin.sock "
        f"| grep -q \"^masters,{master.name},.*,DOWN,\"; do sleep 0.2; done'"),
        timeout=timeout + 10)
    return time.time()


def run(plan, timeline):
    """The drill's steps (see the module's docstring) -> its figures."""
    token = plan.corosync_token_ms
    figures = {"corosync_token_ms": token}
    client_on = client_host(plan)
    standins = start_standins(plan, timeline)
    client = None
    try:
        client = Client(plan, client_on)
        timeline.mark(f"client on {client_on.name}: GET https://{plan.api_vip}:"
                      f"{plan.api_port}/readyz every {INTERVAL * 1000:.0f} ms")
        client.wait(lambda c: any(ok for _, ok in c.results),
                    "no request to the VIP succeeded (is the lab deployed?)")
        try:
            steps(plan, timeline, client, figures)
        except DrillError as error:
            raise DrillError(f"{error}\n{cluster_status(plan)}") from None
        figures["requests"] = len(client.results)
    finally:
        if client:
            client.stop()
        stop_standins(plan, standins)
        if standins:
            timeline.mark("API stand-in removed")
    figures["goals_met"] = {key: figures[key] <= goal for key, goal in GOALS.items()}
    for key, goal in GOALS.items():
        timeline.mark(f"goal {key} <= {goal}: {figures[key]} "
                      f"({'met' if figures['goals_met'][key] else 'MISSED'})")
    stats_page(plan)
    return figures


def cluster_status(plan):
    """What pacemaker says on each load balancer that answers (resources, fail counts): why
    a step failed."""
    said = []
    for node in up(plan, "loadbalancers"):
        try:
            status = on_host(plan, node, "crm_mon -1 -r -f", timeout=30, check=False)
            said.append(f"{node.name}: crm_mon -1 -r -f:\n{status.stdout}{status.stderr}")
        except DrillError as error:
            said.append(str(error))
    return "\n".join(said)


def stats_page(plan):
    """Tell the user where HAProxy's stats page is, and its credentials (not in the JSON)."""
    secrets = lab_secrets(plan)
    port = plan.stats_port
    pages = ", ".join(f"http://{h.nics[0].address}:{port}/stats"
                      for h in plan.group("loadbalancers"))
    print(f"HAProxy stats: {pages} (from a lab host), user {secrets['haproxy_stats_user']}, "
          f"password {secrets['haproxy_stats_password']}", file=sys.stderr)


def steps(plan, timeline, client, figures):
    lbs = plan.group("loadbalancers")
    holder = vip_holder(plan, lbs[0])
    if holder is None:
        raise DrillError("the VIP runs on no load balancer: deploy the lab first")
    survivor = next((h for h in lbs if h.name != holder.name), None)
    if survivor is None:
        raise DrillError("one load balancer: nowhere to fail over to (set "
                         "hosts.loadbalancers.count: 2)")
    # A starved lab (software-emulated VMs) may fail a request now and then: start from calm.
    client.wait(steady(BASELINE), f"requests to the VIP did not all succeed for {BASELINE} s "
                "in a row before the drill")
    timeline.mark(f"requests to the VIP all succeed for {BASELINE} s")

    # 1. A hard kill of the VIP's node.
    cut = time.time()
    power_cut(plan, holder)
    timeline.mark(f"1. power cut of {holder.name} (holds the VIP)")
    client.wait(recovered(cut), "requests did not succeed again after the power cut")
    figures["hard_kill_outage_s"] = outage(client.since(cut))
    moved = wait_until(lambda: vip_holder(plan, survivor), "the VIP came up nowhere", WAIT)
    figures["power_cut"], figures["vip_after_power_cut"] = holder.name, moved.name
    timeline.mark(f"   requests succeed again: outage {figures['hard_kill_outage_s']} s; "
                  f"VIP on {moved.name}")

    # 2. It comes back: the VIP stays (stickiness), no request fails. Where the VIP is, is
    # read from the nodes' addresses: pacemaker's status shows a returning node's stale
    # history (the VIP "on" it) for a moment without fencing.
    back = time.time()
    places = [(moved.name,)]
    power_on(plan, holder)
    timeline.mark(f"2. {holder.name} powered on, answers SSH")

    def rejoined():
        places.append(holding(plan, lbs))
        status = ET.fromstring(on_host(plan, survivor, "crm_mon -1 --output-as=xml").stdout)
        return any(n.get("name") == holder.name and n.get("online") == "true"
                   for n in status.iter("node"))
    wait_until(rejoined, f"{holder.name} did not rejoin the cluster", WAIT)
    on_host(plan, survivor, f"crm_resource --wait --timeout={WAIT}s", timeout=WAIT + 10)
    time.sleep(SETTLE)
    places.append(holding(plan, lbs))
    figures["flaps"] = sum(1 for a, b in zip(places, places[1:]) if a != b)
    failed = [t for t, ok in client.since(back) if not ok]
    figures["failed_after_recovery"] = len(failed)
    figures["vip_failed_after_recovery"] = sum(1 for t in failed
                                               if client.why[t].startswith("vip:"))
    if failed:
        timeline.mark("   failed: " + ", ".join(f"{client.why[t]} at +{t - back:.1f} s"
                                                 for t in failed))
    timeline.mark(f"   {holder.name} rejoined; VIP on {', '.join(places[-1]) or 'no node'}; "
                  f"{figures['failed_after_recovery']} failed requests "
                  f"({figures['vip_failed_after_recovery']} at the VIP), "
                  f"{figures['flaps']} VIP moves")

    # 3. A clean move: the VIP's node in standby, then online again.
    current = vip_holder(plan, survivor)
    move = time.time()
    on_host(plan, current, f"crm node standby {current.name}")
    timeline.mark(f"3. {current.name} in standby")
    wait_until(lambda: (h := vip_holder(plan, current)) and h.name != current.name,
               "the VIP did not move", WAIT)
    time.sleep(SETTLE)
    figures["clean_move_outage_s"] = outage(client.since(move))
    on_host(plan, current, f"crm node online {current.name}")
    on_host(plan, current, f"crm_resource --wait --timeout={WAIT}s", timeout=WAIT + 10)
    timeline.mark(f"   VIP on {vip_holder(plan, current).name}, outage "
                  f"{figures['clean_move_outage_s']} s; {current.name} online again")

    # 4. One master's API port refuses: HAProxy's checks take it out.
    masters = up(plan, "masters")
    master, balancer = masters[0], vip_holder(plan, current)
    rule = f"INPUT -p tcp --dport {plan.api_port} -j REJECT --reject-with tcp-reset"
    # From when this machine learns the rule is in place (as it learns the DOWN: both late by
    # one SSH reply, seconds on a starved VM).
    on_host(plan, master, f"iptables -I {rule}")
    stop = time.time()
    timeline.mark(f"4. {master.name}'s API port refuses connections")
    try:
        seen = server_down_seen(plan, balancer, master)
    finally:
        on_host(plan, master, f"iptables -D {rule}")
    reopened = time.time()
    figures["backend_down_detect_s"] = round(seen - stop, 2)
    figures["backend_down_failed_requests"] = sum(1 for t, ok in client.since(stop)
                                                  if not ok and t < seen)
    timeline.mark(f"   HAProxy marked {master.name} DOWN after "
                  f"{figures['backend_down_detect_s']} s "
                  f"({figures['backend_down_failed_requests']} failed requests meanwhile); "
                  "port open again")
    if len(masters) == 1:
        timeline.mark("   (one master: no backend is left while it is down, so requests fail "
                      "until it is back)")
    client.wait(lambda c: any(ok for _, ok in c.since(reopened)),
                "requests did not succeed again once the master answered")

