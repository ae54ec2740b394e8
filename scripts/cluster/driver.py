#!/usr/bin/env python3
"""Traffic driver and checker of scripts/cluster-test (stdlib only).

Drives predictions and conversions at several `verdict serve` nodes from worker
threads, retrying every failed request at another node (conversions with the same
client event_id), kills the JetStream stream leader's nats-server mid-run, keeps
driving, then checks that every acknowledged event is in the audit log exactly once
and that /results of every node equals `verdict replay --results` computed from the store.
"""
import argparse, json, os, random, signal, subprocess, sys, threading, time, urllib.request, urllib.error, uuid

def call(method, url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        return 0, {"error": str(e)}

def differences(a, b, path=""):
    """Where two JSON values differ, as 'path: a != b' lines."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k), b.get(k), "%s.%s" % (path, k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, "%s[%d]" % (path, i))
        return out
    return [] if a == b else ["%s: replay %r, node %r" % (path or ".", a, b)]

def log(*a):
    print("[driver %s]" % time.strftime("%H:%M:%S"), *a, flush=True)

class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.predictions = {}   # prediction_id -> position acknowledged
        self.conversions = {}   # event_id -> position acknowledged
        self.failures = 0
        self.retries = 0
        self.max_position = 0
        self.errors = {}
        self.crashed = []

    def fail(self, what, status, body):
        with self.lock:
            self.failures += 1
            err = body.get("error", body) if isinstance(body, dict) else body
            if isinstance(err, dict):
                err = err.get("message", err)
            key = ("%s %s %s" % (what, status, err))[:200]
            self.errors[key] = self.errors.get(key, 0) + 1

    def ack(self, kind, key, position):
        with self.lock:
            getattr(self, kind)[key] = position
            self.max_position = max(self.max_position, position)

def stream_leader(http_ports, stream):
    for port in http_ports:
        status, body = call("GET", "http://127.0.0.1:%d/jsz?streams=true" % port, timeout=3)
        if status != 200 or not body:
            continue
        for acct in body.get("account_details", []):
            for s in acct.get("stream_detail", []):
                if s.get("name") == stream and s.get("cluster", {}).get("leader"):
                    return s["cluster"]["leader"]
    return None

def worker(wid, nodes, exp, ledger, stop, rng):
    try:
        drive(wid, nodes, exp, ledger, stop, rng)
    except Exception as e:  # a dead worker must fail the test, not thin the traffic
        with ledger.lock:
            ledger.crashed.append("worker %d: %r" % (wid, e))

def drive(wid, nodes, exp, ledger, stop, rng):
    n = 0
    while not stop.is_set():
        user = "w%d-u%d" % (wid, n)
        n += 1
        # A prediction (not idempotent: a retry is a new prediction, so only acknowledged
        # prediction ids are checked).
        for attempt in range(20):
            node = nodes[(wid + n + attempt) % len(nodes)]
            status, body = call("POST", node + "/api/predictions", {"experiment_id": exp, "user_id": user, "input": {"n": n}})
            if status in (200, 201):
                ledger.ack("predictions", body["prediction_id"], body["position"])
                break
            ledger.fail("prediction", status, body)
            time.sleep(0.2 * (attempt + 1))
        else:
            log("worker %d: prediction for %s never acknowledged" % (wid, user))
            continue
        if rng.random() < 0.5:
            event_id = str(uuid.uuid4())
            amount = round(rng.uniform(1, 100), 2)
            for attempt in range(40):
                node = nodes[(wid + n + attempt + 1) % len(nodes)]
                status, body = call("POST", node + "/api/conversions", {"event_id": event_id, "experiment_id": exp, "user_id": user, "amount": amount, "conversion_type": "purchase"})
                if status in (200, 201):
                    ledger.ack("conversions", event_id, body["position"])
                    break
                ledger.fail("conversion", status, body)
                time.sleep(0.2 * (attempt + 1))
            else:
                log("worker %d: conversion %s never acknowledged" % (wid, event_id))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", required=True, help="comma-separated serve URLs")
    ap.add_argument("--nats-http", required=True, help="comma-separated monitoring ports")
    ap.add_argument("--nats-pids", required=True, help="dir with n1.pid.. (server names n1..)")
    ap.add_argument("--stream", default="VERDICT")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--kill-at", type=float, default=10)
    ap.add_argument("--kill-projector", help="pid file of the active verdict project, killed with SIGKILL")
    ap.add_argument("--kill-projector-at", type=float, default=20)
    ap.add_argument("--verdict", required=True, help="verdict binary (for replay --results)")
    ap.add_argument("--store", required=True)
    ap.add_argument("--report", required=True)
    a = ap.parse_args()
    nodes = a.nodes.split(",")
    http_ports = [int(p) for p in a.nats_http.split(",")]
    exp = "cluster-%d" % os.getpid()

    status, body = call("POST", nodes[0] + "/api/experiments", {"start": True, "experiment_id": exp, "name": "cluster test", "models": {"control": "rec-v1", "treatment": "rec-v2"}, "traffic_split": {"control": 50, "treatment": 50}})
    if status not in (200, 201):
        sys.exit("creating the experiment failed: %s %s" % (status, body))
    if body.get("status") != "running":
        status, body = call("POST", nodes[1] + "/api/experiments/%s/start" % exp)
        if status != 200:
            sys.exit("starting on the other node failed: %s %s" % (status, body))
    log("experiment %s running (created on %s)" % (exp, nodes[0]))

    ledger = Ledger()
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(i, nodes, exp, ledger, stop, random.Random(i)), daemon=True) for i in range(a.workers)]
    started = time.time()
    for t in threads:
        t.start()
    killed = None
    projector_killed = a.kill_projector is None
    while time.time() - started < a.seconds:
        time.sleep(0.5)
        if not projector_killed and time.time() - started >= a.kill_projector_at:
            pid = int(open(a.kill_projector).read())
            projector_killed = True
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                with ledger.lock:
                    ledger.crashed.append("the active projector (pid %d) had already exited" % pid)
            with ledger.lock:
                log("killed the active projector (pid %d) after %d predictions acknowledged" % (pid, len(ledger.predictions)))
        if killed is None and time.time() - started >= a.kill_at:
            leader = stream_leader(http_ports, a.stream)
            if leader is None:
                sys.exit("could not find the stream leader through /jsz")
            pid = int(open(os.path.join(a.nats_pids, leader + ".pid")).read())
            with ledger.lock:
                before = (len(ledger.predictions), len(ledger.conversions))
            os.kill(pid, signal.SIGKILL)
            killed = leader
            log("killed stream leader %s (pid %d) after %d predictions, %d conversions acknowledged" % (leader, pid, *before))
            http_ports = [p for i, p in enumerate(http_ports) if "n%d" % (i + 1) != leader]
    stop.set()
    for t in threads:
        t.join(timeout=120)
    new_leader = stream_leader(http_ports, a.stream)
    log("stopped driving: %d predictions and %d conversions acknowledged, %d failed attempts retried; new leader %s" % (len(ledger.predictions), len(ledger.conversions), ledger.failures, new_leader))
    for k, v in sorted(ledger.errors.items(), key=lambda kv: -kv[1])[:8]:
        log("  %5d x %s" % (v, k))
    if killed is None:
        sys.exit("the leader was never killed (run longer than --kill-at)")
    if new_leader is None or new_leader == killed:
        sys.exit("no new stream leader after the kill")

    # 1. Every acknowledged event is in the audit log exactly once (read through node 2).
    seen_pred, seen_conv, nxt, pages = {}, {}, 1, 0
    while nxt is not None:
        status, body = call("GET", nodes[1] + "/api/experiments/%s/events?from=%d&limit=1000" % (exp, nxt), timeout=60)
        if status != 200:
            sys.exit("reading the audit log failed: %s %s" % (status, body))
        pages += 1
        for e in body["events"]:
            t, data = e.get("type") or e.get("event_type"), e.get("data", {})
            if t in ("PredictionMade", "PredictionFailed") and not data.get("shadow"):
                seen_pred.setdefault(data["prediction_id"], []).append(e["position"])
            elif t == "ConversionRecorded":
                seen_conv.setdefault(e["event_id"], []).append(e["position"])
        nxt = body["next"]
    errors = list(ledger.crashed)
    for pid_, pos in ledger.predictions.items():
        got = seen_pred.get(pid_, [])
        if got != [pos]:
            errors.append("prediction %s acknowledged at %d, in the log at %s" % (pid_, pos, got))
    for eid, pos in ledger.conversions.items():
        got = seen_conv.get(eid, [])
        if got != [pos]:
            errors.append("conversion %s acknowledged at %d, in the log at %s" % (eid, pos, got))
    dup = [(k, v) for k, v in seen_conv.items() if len(v) > 1]
    if dup:
        errors.append("%d conversion event ids stored more than once, e.g. %s" % (len(dup), dup[:3]))
    log("audit log: %d pages, %d predictions, %d conversions; acknowledged ones present once: %s" % (pages, len(seen_pred), len(seen_conv), "yes" if not errors else "NO"))

    # 2. /results of every node equals a replay of the store.
    head = max(max(v) for v in list(seen_pred.values()) + list(seen_conv.values()))
    replay = subprocess.run([a.verdict, "replay", "--store", a.store, "--results", exp], capture_output=True, text=True, timeout=300)
    if replay.returncode != 0:
        sys.exit("verdict replay --results failed: %s" % replay.stderr)
    expected = json.loads(replay.stdout)
    for node in nodes:
        status, got = call("GET", node + "/api/experiments/%s/results?min_position=%d" % (exp, head), timeout=60)
        if status != 200:
            errors.append("%s /results: %s %s" % (node, status, got))
        elif got != expected:
            errors.append("%s /results differs from the replay: %s" % (node, "; ".join(differences(expected, got)[:6])))
    users = sum(v["users"] for v in expected["variants"])
    log("results: replay of the store has %d users, %s; nodes agree: %s" % (users, [(v["key"], v["users"], v["predictions"], v["conversions"]) for v in expected["variants"]], "yes" if not any("/results" in e for e in errors) else "NO"))

    report = {"acknowledged_predictions": len(ledger.predictions), "acknowledged_conversions": len(ledger.conversions),
              "failed_attempts_retried": ledger.failures, "killed_leader": killed, "new_leader": new_leader,
              "log_predictions": len(seen_pred), "log_conversions": len(seen_conv), "errors": errors[:50]}
    with open(a.report, "w") as f:
        json.dump(report, f, indent=2)
    if errors:
        for e in errors[:20]:
            log("FAIL:", e)
        sys.exit(1)
    log("PASS")

if __name__ == "__main__":
    main()
