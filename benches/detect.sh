#!/usr/bin/env bash
# `auditlake detect` over N generated access events beside DuckDB running the
# same rule and view SQL (query/rules/*.sql, query/src/views/*.sql) over the
# same Parquet files of the lake, in the same run on the same machine.
#
#   benches/detect.sh [--events N] [--seed S] [--runs R]
#
# Builds the release binary (CARGO_TARGET_DIR), installs the duckdb Python
# package if missing, generates and ingests the data once (cached under
# $BENCH_WORK, default ~/.cache/auditlake/bench-detect), then times R runs of
# each variant (wall time and peak RSS, /usr/bin/time) and prints a Markdown
# table for benches/RESULTS.md. Both engines also report their finding counts,
# which must be equal.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/auditlake/target}"
EVENTS=5000000
SEED=7
RUNS=3
while [ $# -gt 0 ]; do
  case "$1" in
    --events) EVENTS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
if ! "$PY" -c "import duckdb" 2>/dev/null; then
  VENV="${AUDITLAKE_TOOLS:-$HOME/.cache/auditlake/tools}/bench-venv"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q duckdb
  PY="$VENV/bin/python"
fi
cargo build --release --bin auditlake
BIN="$CARGO_TARGET_DIR/release/auditlake"
WORK="${BENCH_WORK:-$HOME/.cache/auditlake/bench-detect}/e$EVENTS-s$SEED"
mkdir -p "$WORK"
if [ ! -f "$WORK/data/manifest.json" ]; then
  "$BIN" gen --out "$WORK/data" --seed "$SEED" --events "$EVENTS" >&2
fi
if [ ! -f "$WORK/ingested" ]; then
  rm -rf "$WORK/lake"
  "$BIN" ingest --lake "$WORK/lake" --input "api-access=$WORK/data/api-access.jsonl" \
    --input "grants=$WORK/data/grants.jsonl" --input "apps=$WORK/data/apps.jsonl" \
    --input "deletions=$WORK/data/deletions.jsonl" >&2
  touch "$WORK/ingested"
fi
NOW=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['suggested_now'])" "$WORK/data/manifest.json")
rows=$("$BIN" sql --lake "$WORK/lake" --format csv "SELECT count(*) AS n FROM api_access" | tail -1)

timed() { # label, command...: prints "label seconds peak_MiB" per run
  local label="$1"; shift
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$@" > "$WORK/out.txt" 2> "$WORK/err.txt" \
      || { cat "$WORK/err.txt" >&2; exit 1; }
    read -r secs kib < "$WORK/time.txt"
    echo "$label $secs $((kib / 1024))"
  done
}

{
  timed "auditlake-detect" "$BIN" detect --lake "$WORK/lake" --now "$NOW" --dry-run --format jsonl
  cp "$WORK/out.txt" "$WORK/detect.jsonl"
  timed "auditlake-detect-no-materialize" "$BIN" detect --lake "$WORK/lake" --now "$NOW" --dry-run --format none --no-materialize
  timed "duckdb" "$PY" benches/detect_duckdb.py "$WORK/lake" "$NOW" --out "$WORK/duckdb.jsonl"
  timed "duckdb-materialize" "$PY" benches/detect_duckdb.py "$WORK/lake" "$NOW" --materialize
} > "$WORK/runs.txt"

detect_n=$(wc -l < "$WORK/detect.jsonl")
duck_n=$(wc -l < "$WORK/duckdb.jsonl")
"$PY" - "$WORK/runs.txt" "$rows" "$NOW" "$detect_n" "$duck_n" "$(nproc)" <<'EOF'
import collections, statistics, sys
runs, rows, now, dn, kn, cores = sys.argv[1:]
by = collections.OrderedDict()
for line in open(runs):
    label, secs, mib = line.split()
    by.setdefault(label, []).append((float(secs), int(mib)))
base = statistics.median(s for s, _ in by["duckdb"])
print(f"api_access rows: {int(rows):,}; --now {now}; findings: auditlake {dn}, DuckDB {kn}; {cores} cores\n")
print("| engine | median s | runs (s) | peak RSS MiB | vs DuckDB |")
print("|---|---|---|---|---|")
for label, v in by.items():
    med = statistics.median(s for s, _ in v)
    runs_s = ", ".join(f"{s:.2f}" for s, _ in v)
    print(f"| {label} | {med:.2f} | {runs_s} | {max(m for _, m in v)} | {med / base:.2f}x |")
EOF
if [ "$detect_n" != "$duck_n" ]; then
  echo "finding counts differ: auditlake $detect_n, DuckDB $duck_n" >&2
  exit 1
fi
