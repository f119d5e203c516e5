#!/usr/bin/env bash
# Kafka -> lake throughput against tansu on this machine.
#   benches/kafka.sh [--events N]   (default 500,000 access events)
# Starts tansu (installed by .ci/run) on a free port, produces `gen` traffic into
# it, then times `auditlake ingest --brokers` until idle, pinned to one core and
# on all cores, reporting events/s, ingest peak RSS and the broker's CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/auditlake/target}"
TOOLS="${AUDITLAKE_TOOLS:-$HOME/.cache/auditlake/tools}"
EVENTS=500000
[ "${1:-}" = "--events" ] && EVENTS="$2"
[ -n "${AUDITLAKE_BIN:-}" ] || cargo build --release --bin auditlake
BIN="${AUDITLAKE_BIN:-$CARGO_TARGET_DIR/release/auditlake}"
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$WORK" && exec "$TOOLS/bin/tansu" broker --listener-url "tcp://127.0.0.1:$PORT" \
   --advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine sqlite://tansu.db > tansu.log 2>&1) &
TANSU=$!
trap 'kill $TANSU 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 1
for t in api-access grants apps deletions; do
  "$TOOLS/bin/tansu" topic create "$t" --broker "tcp://127.0.0.1:$PORT" --partitions 4 >/dev/null
done
cpu() { awk '{print ($14+$15)/100}' "/proc/$1/stat"; }
echo "producing $EVENTS access events (plus grants, apps, deletions) into tansu..."
AUDITLAKE_LOG=warn "$BIN" gen --brokers "127.0.0.1:$PORT" --events "$EVENTS" --seed 1 | tail -1
for run in "1 core:0" "all cores:"; do
  label=${run%%:*}; pin=${run#*:}
  before=$(cpu $TANSU)
  start=$(date +%s.%N)
  ${pin:+taskset -c $pin} /usr/bin/time -v -o "$WORK/time.txt" "$BIN" ingest --lake "$WORK/lake-$RANDOM" \
      --brokers "127.0.0.1:$PORT" --group "bench-$RANDOM" --stop-when-idle 3s > "$WORK/out.txt" 2>/dev/null
  secs=$(python3 -c "print($(date +%s.%N) - $start - 3)")
  after=$(cpu $TANSU)
  msgs=$(awk '/consumed/ {gsub(",",""); s+=$2} END {print s}' "$WORK/out.txt")
  rss=$(awk -F: '/Maximum resident/ {print int($2/1024)}' "$WORK/time.txt")
  python3 -c "print(f'$label: {$msgs:,} messages in {$secs:.1f} s = {$msgs/$secs:,.0f} msg/s; ingest peak RSS $rss MiB; tansu CPU {$after-$before:.1f} s ({($after-$before)/$secs*100:.0f}% of one core)')"
done
