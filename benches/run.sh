#!/usr/bin/env bash
# Benchmarks auditlake side by side with DuckDB on the same machine and data.
#   benches/run.sh [--events N] [--ingest-runs N] [bench.py options: --phases queries --repeat R --rounds K]
# (default 5,000,000 access events). Builds the release binary (cached in
# CARGO_TARGET_DIR), installs the duckdb Python package and the DuckDB CLI
# (PyPI duckdb-cli, for whole-process query times) if missing, runs
# benches/bench.py (ingest, queries), benches/detect.sh and
# retention/bench/erase_bench.py (erase, verify), each printing a Markdown
# table for benches/RESULTS.md (~10 min at 5M events on 2 cores, once built).
# With --phases/--repeat/--rounds only bench.py runs. Work files go under
# $BENCH_WORK (default ~/.cache/auditlake: bench/, bench-detect/,
# bench-retention/), never into the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/auditlake/target}"
EVENTS=5000000
EXTRA=()
ONLY_MAIN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --events) EVENTS="$2"; shift 2 ;;
    --phases|--repeat|--rounds) EXTRA+=("$1" "$2"); ONLY_MAIN=1; shift 2 ;;
    --ingest-runs) EXTRA+=("$1" "$2"); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
if ! "$PY" -c "import duckdb, duckdb_cli" 2>/dev/null; then
  VENV="${AUDITLAKE_TOOLS:-$HOME/.cache/auditlake/tools}/bench-venv"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q duckdb duckdb-cli
  PY="$VENV/bin/python"
fi
cargo build --release --bin auditlake
BIN="$CARGO_TARGET_DIR/release/auditlake"
WORK_ROOT="${BENCH_WORK:-$HOME/.cache/auditlake}"
# 1. ingest (1 and 2 cores), bytes per event, peak RSS, the five analyst queries.
"$PY" benches/bench.py --bin "$BIN" --work "$WORK_ROOT/bench" --events "$EVENTS" "${EXTRA[@]}"
if [ "$ONLY_MAIN" = 1 ]; then
  exit 0
fi
# 2. detect vs DuckDB on the same rule SQL (same binary, same Python).
PYTHON="$PY" BENCH_WORK="$WORK_ROOT/bench-detect" benches/detect.sh --events "$EVENTS" --runs 3
# 3. erase one user vs a full rewrite; verify vs DuckDB's count.
"$PY" retention/bench/erase_bench.py --bin "$BIN" --events "$EVENTS" --work "$WORK_ROOT/bench-retention"
