#!/usr/bin/env bash
# Starts JetStream servers on loopback for nats_bench_append: `nats-cluster.sh 1` one server
# on 14222, `nats-cluster.sh 3` a 3-node cluster on 14222-14224 (routes 16222-16224); all
# with file storage and sync_interval: always (the durable setting). Data and logs in $DIR
# (default: a new temp dir). Prints the client URL; stop with `kill $(cat $DIR/*.pid)`.
set -euo pipefail
n="${1:-1}"
bin="${VERDICT_NATS_SERVER:-$HOME/.cache/verdict-venv-nats/bin/nats-server}"
DIR="${DIR:-$(mktemp -d)}"
routes=""
for i in $(seq 1 "$n"); do routes="$routes nats-route://127.0.0.1:$((16221 + i))"; done
urls=""
for i in $(seq 1 "$n"); do
  port=$((14221 + i))
  conf="$DIR/n$i.conf"
  {
    echo "server_name: n$i"
    echo "listen: 127.0.0.1:$port"
    echo "jetstream { store_dir: \"$DIR/n$i\", sync_interval: always }"
    if [ "$n" -gt 1 ]; then
      echo "cluster { name: verdict, listen: 127.0.0.1:$((16221 + i)), routes: [$(echo $routes | sed 's/ /, /g')] }"
    fi
  } >"$conf"
  "$bin" -c "$conf" >"$DIR/n$i.log" 2>&1 &
  echo $! >"$DIR/n$i.pid"
  urls="${urls:+$urls,}nats://127.0.0.1:$port"
done
# Wait until JetStream reports healthy on every node (a cluster needs its meta leader).
for i in $(seq 1 "$n"); do
  for _ in $(seq 1 100); do
    grep -q "Server is ready" "$DIR/n$i.log" && break
    sleep 0.1
  done
done
sleep 2
echo "$urls"
