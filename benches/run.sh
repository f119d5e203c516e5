#!/usr/bin/env bash
# Benchmarks auditlake side by side with DuckDB on the same machine and data.
#   benches/run.sh [--events N] [bench.py options: --phases queries --repeat R --rounds K]
# (default 5,000,000 access events). Builds the release binary (cached in
# CARGO_TARGET_DIR), installs the duckdb Python package and the DuckDB CLI
# (PyPI duckdb-cli, for whole-process query times) if missing, runs
# benches/bench.py and prints a Markdown table to paste into
# benches/RESULTS.md. Work files go to $BENCH_WORK (default
# ~/.cache/auditlake/bench), never into the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/auditlake/target}"
EVENTS=5000000
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --events) EVENTS="$2"; shift 2 ;;
    --phases|--repeat|--rounds) EXTRA+=("$1" "$2"); shift 2 ;;
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
exec "$PY" benches/bench.py --bin "$CARGO_TARGET_DIR/release/auditlake" \
  --work "${BENCH_WORK:-$HOME/.cache/auditlake/bench}" --events "$EVENTS" "${EXTRA[@]}"
