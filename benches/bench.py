#!/usr/bin/env python3
"""auditlake vs DuckDB, side by side, in one run on the same machine and data.

Called by benches/run.sh (which builds the release binary and installs duckdb).
Measures, on data from `auditlake gen`:
  ingest   JSON lines -> zstd Parquet: `auditlake ingest --input` vs DuckDB
           COPY (SELECT * FROM read_json(...)) TO ... (FORMAT parquet, COMPRESSION zstd),
           pinned to one core (taskset -c 0) and on all cores; events/s, bytes/event, peak RSS.
  queries  five analyst queries on the same Parquet files (the lake's api_access
           and grants files): `auditlake sql` (whole process, best of 3) vs DuckDB
           (in-process query time, best of 3: generous to DuckDB).
Writes benches/results.json and prints a Markdown table for benches/RESULTS.md.
"""
import argparse, json, os, platform, re, shutil, subprocess, sys, time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent

QUERIES = {
    "events per app per day":
        "SELECT app_id, date, count(*) AS n FROM api_access GROUP BY app_id, date ORDER BY app_id, date",
    "all events of one user (point lookup)":
        "SELECT * FROM api_access WHERE user_id = '{user}' ORDER BY event_time",
    "accesses whose scope was never granted (anti-join)":
        "SELECT a.event_id FROM api_access a WHERE a.status BETWEEN 200 AND 299 AND a.user_id IS NOT NULL "
        "AND a.required_scope IS NOT NULL AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.app_id = a.app_id "
        "AND g.user_id = a.user_id AND g.action = 'grant' AND array_has(g.scopes, a.required_scope)) ORDER BY a.event_id",
    "distinct users per app per hour":
        "SELECT app_id, date_trunc('hour', event_time) AS hour, count(DISTINCT user_id) AS users FROM api_access "
        "WHERE user_id IS NOT NULL GROUP BY app_id, date_trunc('hour', event_time) ORDER BY app_id, hour",
    "top client IPs by developer count":
        "SELECT client_ip, count(DISTINCT developer_id) AS developers FROM api_access GROUP BY client_ip "
        "ORDER BY developers DESC, client_ip LIMIT 20",
}


def run(cmd, env=None, pin=None):
    """Runs a command under /usr/bin/time -v; returns (seconds, peak RSS MiB, stdout)."""
    full = ["/usr/bin/time", "-v"] + (["taskset", "-c", pin] if pin else []) + cmd
    t0 = time.perf_counter()
    p = subprocess.run(full, capture_output=True, text=True, env=env)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return secs, (int(rss.group(1)) / 1024 if rss else float("nan")), p.stdout


def parquet_bytes(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*.parquet"))


def duck_ingest(src, dst, threads):
    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    t0 = time.perf_counter()
    con.execute(
        f"COPY (SELECT * FROM read_json('{src}', format='newline_delimited', ignore_errors=true)) "
        f"TO '{dst}' (FORMAT parquet, COMPRESSION zstd)")
    return time.perf_counter() - t0


def duck_query(con, sql, repeat=3):
    best = float("inf")
    rows = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = con.execute(sql).fetchall()
        best = min(best, time.perf_counter() - t0)
    return best, len(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--events", type=int, default=5_000_000)
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "data"
    env = dict(os.environ, AUDITLAKE_LOG="warn")
    res = {"events": args.events, "machine": {
        "nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
        "duckdb": duckdb.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}}

    secs, rss, _ = run([args.bin, "gen", "--out", str(data), "--events", str(args.events), "--seed", "1"], env)
    res["gen"] = {"seconds": secs, "events_per_s": args.events / secs}
    print(f"gen: {secs:.1f}s ({args.events / secs:,.0f} ev/s)", flush=True)
    manifest = json.loads((data / "manifest.json").read_text())
    lines = manifest["topics"]["api-access"]["lines"]
    stored = manifest["topics"]["api-access"]["distinct_events"]
    src = data / "api-access.jsonl"

    res["ingest"] = {}
    for label, pin, threads in [("1 core", "0", 1), ("2 cores", None, os.cpu_count())]:
        lake = work / f"lake-{threads}"
        s, r, _ = run([args.bin, "ingest", "--lake", str(lake), "--input", f"api-access={src}"], env, pin)
        out = work / f"duck-{threads}.parquet"
        if pin:
            d = float(subprocess.check_output(
                ["taskset", "-c", pin, sys.executable, __file__, "--duck-ingest", str(src), str(out), "1"]))
        else:
            d = duck_ingest(src, out, threads)
        res["ingest"][label] = {
            "auditlake_s": s, "auditlake_ev_s": lines / s, "auditlake_rss_mib": r,
            "duckdb_s": d, "duckdb_ev_s": lines / d,
            "auditlake_bytes_per_event": parquet_bytes(lake / "api_access") / stored,
            "duckdb_bytes_per_event": out.stat().st_size / lines,
        }
        print(f"ingest {label}: auditlake {lines / s:,.0f} ev/s ({r:.0f} MiB), duckdb {lines / d:,.0f} ev/s", flush=True)

    # Grants too, for the anti-join.
    lake = work / f"lake-{os.cpu_count()}"
    run([args.bin, "ingest", "--lake", str(lake), "--input", f"grants={data / 'grants.jsonl'}"], env)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW api_access AS SELECT * FROM read_parquet('{lake}/api_access/*/*.parquet', hive_partitioning=true)")
    con.execute(f"CREATE VIEW grants AS SELECT * FROM read_parquet('{lake}/grants/*/*.parquet', hive_partitioning=true)")
    user = con.execute("SELECT user_id FROM api_access WHERE user_id IS NOT NULL GROUP BY user_id ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    res["queries"] = {}
    for name, sql in QUERIES.items():
        sql = sql.format(user=user)
        best = float("inf")
        for _ in range(3):
            s, _, out = run([args.bin, "sql", "--lake", str(lake), "--format", "json", sql], env)
            best = min(best, s)
        a_rows = len(out.splitlines())
        d, d_rows = duck_query(con, sql)
        res["queries"][name] = {"auditlake_s": best, "duckdb_s": d, "ratio": best / d,
                                "auditlake_rows": a_rows, "duckdb_rows": d_rows}
        print(f"query {name}: auditlake {best * 1000:.0f} ms, duckdb {d * 1000:.0f} ms ({a_rows} vs {d_rows} rows)", flush=True)
    ratios = [q["ratio"] for q in res["queries"].values()]
    res["queries_geomean_ratio"] = geomean(ratios)
    (ROOT / "benches" / "results.json").write_text(json.dumps(res, indent=2))
    print(markdown(res))


def geomean(xs):
    import math
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def markdown(res):
    m = res["machine"]
    out = [f"### Run of {m['date']}: {res['events']:,} access events, {m['nproc']} cores ({m['cpu']}), DuckDB {m['duckdb']}",
           "", "| measure | auditlake | DuckDB | ratio (auditlake : DuckDB) |", "|---|---|---|---|"]
    g = res["gen"]
    for label, i in res["ingest"].items():
        out.append(f"| ingest, {label} (events/s) | {i['auditlake_ev_s']:,.0f} | {i['duckdb_ev_s']:,.0f} | "
                   f"{i['auditlake_ev_s'] / i['duckdb_ev_s']:.2f}x throughput |")
        out.append(f"| bytes per event, {label} | {i['auditlake_bytes_per_event']:.1f} | {i['duckdb_bytes_per_event']:.1f} | "
                   f"{i['auditlake_bytes_per_event'] / i['duckdb_bytes_per_event']:.2f} |")
        out.append(f"| ingest peak RSS, {label} (MiB) | {i['auditlake_rss_mib']:.0f} | | |")
    for name, q in res["queries"].items():
        out.append(f"| {name} (ms) | {q['auditlake_s'] * 1000:.0f} | {q['duckdb_s'] * 1000:.0f} | {q['ratio']:.2f} |")
    out.append(f"| analyst queries, geometric mean of ratios | | | {res['queries_geomean_ratio']:.2f} |")
    out.append(f"\ngen: {g['events_per_s']:,.0f} access events/s ({g['seconds']:.1f} s).")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--duck-ingest":
        print(duck_ingest(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        main()
