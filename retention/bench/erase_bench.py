#!/usr/bin/env python3
"""Erasure and verification at scale, beside DuckDB on the same Parquet.

    retention/bench/erase_bench.py --bin target/release/auditlake [--events 5000000] [--work DIR]

1. `auditlake gen` (seed 1) and `auditlake ingest --input` into a local lake.
2. Baselines on the unclustered lake: erasing the busiest user with
   `auditlake retention erase` (most files hold every user), and a full
   rewrite of `api_access` without that user by DuckDB (COPY ... WHERE).
3. `retention sweep` with `[clustering]` (sort old partitions by user_id):
   a one-time full rewrite.
4. On the clustered lake: erase the busiest remaining user (files rewritten /
   total, seconds per step), then `retention verify --user` (deep and fast)
   beside DuckDB's `count(*) WHERE user_id = ...` over the same data files,
   in-process (warm connection, Python API) and as a whole process (the
   DuckDB CLI from the `duckdb-cli` package, if installed), since verify
   is a whole process. Erase and verify runs: --runs (best taken; each
   erase on a fresh copy of the clustered lake).
   `--scan standard` is the default of both erase and verify.

Prints a Markdown table; writes results.json into the work directory.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb

# The DuckDB CLI lookup of the main benchmark (benches/bench.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches"))
from bench import duck_cli  # noqa: E402

NOW = "2026-11-20T00:00:00Z"


def run(cmd, check=True):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "AUDITLAKE_LOG": "warn"})
    secs = time.perf_counter() - t
    if check and p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stderr}\n{p.stdout}")
    return secs, p.stdout


def busiest(bin_, lake, exclude=()):
    not_in = "".join(f" AND user_id <> '{u}'" for u in exclude)
    _, out = run([bin_, "sql", "--lake", lake, "--format", "csv",
                  f"SELECT user_id FROM api_access WHERE user_id IS NOT NULL{not_in} "
                  "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"])
    return out.strip().splitlines()[-1]


def duck(sql, repeat=3):
    con = duckdb.connect()
    best, rows = None, None
    for _ in range(repeat):
        t = time.perf_counter()
        rows = con.sql(sql).fetchall()
        s = time.perf_counter() - t
        best = s if best is None else min(best, s)
    return best, rows


def best_erase(bin_, lake, user, copies, scan="standard"):
    """Erases `user` from `copies` fresh copies of `lake` (an erase changes
    the lake), returning the fastest run; the last copy replaces `lake`."""
    best = None
    for i in range(copies):
        copy = f"{lake}.copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(lake, copy)
        r = erase(bin_, copy, user, scan)
        if best is None or r["seconds"] < best["seconds"]:
            best = r
        if i == copies - 1:
            shutil.rmtree(lake)
            os.rename(copy, lake)
    best["runs"] = copies
    return best


def erase(bin_, lake, user, scan="standard"):
    secs, out = run([bin_, "retention", "erase", "--lake", lake, "--user", user, "--now", NOW,
                     "--scan", scan, "--json"])
    rep = json.loads(out)
    m = rep["metrics"]
    files_rewritten = sum(len(r["retired"]) for r in m["rewrites"].values())
    api = m["rewrites"].get("api_access", {"retired": [], "files_read": 0})
    return {
        "seconds": secs,
        "files_total": m["files_total"],
        "files_rewritten": files_rewritten,
        "api_access_files_read": api["files_read"],
        "api_access_files_rewritten": len(api["retired"]),
        "rows_removed": sum(r["rows_removed"] for r in m["rewrites"].values()),
        "seconds_rewrite": m["seconds_rewrite"],
        "seconds_purge": m["seconds_purge"],
        "seconds_verify": m["seconds_verify"],
        "passed": all(c["passed"] for c in rep["outcome"]["verify"]["checks"]),
    }


def table_files(lake, table):
    return len(list(Path(lake, table).glob("date=*/*.parquet")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--work", default=str(Path.home() / ".cache/auditlake/bench-retention"))
    ap.add_argument("--runs", type=int, default=3,
                    help="erase runs on fresh copies of the clustered lake, and verify runs (best taken)")
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data, lake, plain = work / "gen", str(work / "lake"), str(work / "lake-unclustered")
    res = {"events": a.events}

    run([a.bin, "gen", "--out", str(data), "--events", str(a.events), "--seed", "1"])
    inputs = []
    for t in ["api-access", "grants", "apps", "deletions"]:
        inputs += ["--input", f"{t}={data / (t + '.jsonl')}"]
    secs, _ = run([a.bin, "ingest", "--lake", lake] + inputs)
    res["ingest_s"] = secs
    shutil.copytree(lake, plain)
    data_glob = f"{lake}/*/date=*/*.parquet"

    # Baselines on the unclustered lake.
    victim = busiest(a.bin, plain)
    res["unclustered_files_api_access"] = table_files(plain, "api_access")
    res["unclustered_erase"] = erase(a.bin, plain, victim)
    out = work / "duck-rewrite.parquet"
    s, _ = duck(f"COPY (SELECT * FROM read_parquet('{plain}/api_access/date=*/*.parquet', hive_partitioning=true) "
                f"WHERE user_id IS DISTINCT FROM '{victim}') TO '{out}' (FORMAT parquet, COMPRESSION zstd)", repeat=1)
    res["duckdb_full_rewrite_s"] = s

    # Cluster, then erase on the clustered lake.
    (work / "cluster.toml").write_text('[clustering]\nmin_age = "1d"\n')
    secs, _ = run([a.bin, "retention", "sweep", "--lake", lake, "--policy", str(work / "cluster.toml"), "--now", NOW])
    res["cluster_s"] = secs
    res["clustered_files_api_access"] = table_files(lake, "api_access")
    res["clustered_erase"] = best_erase(a.bin, lake, victim, a.runs)
    second = busiest(a.bin, lake, exclude=[victim])
    res["clustered_erase_fast_verify"] = best_erase(a.bin, lake, second, 1, scan="fast")

    # Verify beside DuckDB, same data files, a user still present.
    third = busiest(a.bin, lake, exclude=[victim, second])
    for scan in ["standard", "deep", "fast"]:
        best = None
        for _ in range(a.runs):
            s, out = run([a.bin, "retention", "verify", "--lake", lake, "--user", third, "--scan", scan,
                          "--no-evidence", "--now", NOW], check=False)
            best = s if best is None else min(best, s)
        res[f"verify_{scan}_s"] = best
    count_sql = f"SELECT count(*) FROM read_parquet('{data_glob}', union_by_name=true) WHERE user_id = '{third}'"
    s, rows = duck(count_sql, repeat=a.runs)
    res["duckdb_count_s"] = s
    res["duckdb_count_rows"] = rows[0][0]
    # The same count as a whole process (the DuckDB CLI), as verify is one.
    cli = duck_cli()
    res["duckdb_cli_count_s"] = None
    if cli:
        res["duckdb_cli_count_s"] = min(run([cli, "-c", count_sql])[0] for _ in range(a.runs))
    s, rows = duck(f"SELECT count(*) FROM read_parquet('{lake}/api_access/date=*/*.parquet') WHERE user_id = '{third}'")
    res["duckdb_count_api_access_s"] = s
    res["lake_bytes"] = sum(p.stat().st_size for p in Path(lake).rglob("*") if p.is_file())
    (work / "results.json").write_text(json.dumps(res, indent=2))

    u, c, f = res["unclustered_erase"], res["clustered_erase"], res["clustered_erase_fast_verify"]
    print(f"### Erasure and verification, {a.events:,} access events, {os.cpu_count()} cores")
    print("| measure | value |\n|---|---|")
    print(f"| api_access files, unclustered / clustered | {res['unclustered_files_api_access']} / {res['clustered_files_api_access']} |")
    print(f"| erase, unclustered: files rewritten / total | {u['files_rewritten']} / {u['files_total']} ({u['rows_removed']} rows) |")
    print(f"| erase, unclustered: rewrite + purge s (verify s) | {u['seconds_rewrite'] + u['seconds_purge']:.2f} ({u['seconds_verify']:.2f}) |")
    print(f"| DuckDB full rewrite of api_access without the user, s | {res['duckdb_full_rewrite_s']:.2f} |")
    print(f"| clustering by user (one-time full rewrite), s | {res['cluster_s']:.2f} |")
    print(f"| erase, clustered: runs on fresh copies (best taken) | {c['runs']} |")
    print(f"| erase, clustered: files rewritten / total | {c['files_rewritten']} / {c['files_total']} "
          f"({100 * c['files_rewritten'] / c['files_total']:.1f}%; {c['rows_removed']} rows) |")
    print(f"| erase, clustered: rewrite + purge s (verify s), whole command s | "
          f"{c['seconds_rewrite'] + c['seconds_purge']:.2f} ({c['seconds_verify']:.2f}), {c['seconds']:.2f} |")
    print(f"| erase, clustered: whole command / DuckDB full rewrite | "
          f"{c['seconds'] / res['duckdb_full_rewrite_s']:.1%} (rewrite step alone {c['seconds_rewrite'] / res['duckdb_full_rewrite_s']:.1%}) |")
    print(f"| erase, clustered, --scan fast: whole command s | {f['seconds']:.2f} |")
    print(f"| rewrite + purge, clustered / unclustered | {(c['seconds_rewrite'] + c['seconds_purge']) / (u['seconds_rewrite'] + u['seconds_purge']):.2f} |")
    print(f"| verify --user, standard (default) / deep / fast, s (best of {a.runs}) | {res['verify_standard_s']:.3f} / "
          f"{res['verify_deep_s']:.3f} / {res['verify_fast_s']:.3f} |")
    print(f"| DuckDB count(*) WHERE user_id = ..., all data files / api_access, s | {res['duckdb_count_s']:.3f} / {res['duckdb_count_api_access_s']:.3f} |")
    print(f"| verify standard / deep / fast vs DuckDB in-process (all data files) | "
          f"{res['verify_standard_s'] / res['duckdb_count_s']:.2f}x / {res['verify_deep_s'] / res['duckdb_count_s']:.2f}x / "
          f"{res['verify_fast_s'] / res['duckdb_count_s']:.2f}x |")
    if res["duckdb_cli_count_s"]:
        d = res["duckdb_cli_count_s"]
        print(f"| DuckDB CLI count(*) WHERE user_id = ..., whole process, s | {d:.3f} |")
        print(f"| verify standard / deep / fast vs DuckDB CLI (whole process each) | "
              f"{res['verify_standard_s'] / d:.2f}x / {res['verify_deep_s'] / d:.2f}x / {res['verify_fast_s'] / d:.2f}x |")


if __name__ == "__main__":
    main()
