#!/usr/bin/env python3
"""auditlake vs DuckDB, side by side, in one run on the same machine and data.

Called by benches/run.sh (which builds the release binary and installs duckdb).
Measures, on data from `auditlake gen`:
  ingest   JSON lines -> zstd Parquet: `auditlake ingest --input` vs DuckDB
           COPY (SELECT * FROM read_json(...)) TO ... (FORMAT parquet, COMPRESSION zstd),
           pinned to one core (taskset -c 0) and on all cores; events/s (median of
           --ingest-runs runs, alternating between the engines), bytes/event, peak RSS.
  queries  five analyst queries on the same Parquet files (the lake's api_access
           and grants files), each engine timed two ways, like for like:
           - in-process: the query alone in a warm session (plan, execute, collect
             the result in the engine's own format; no printing), best of
             --repeat runs x --rounds rounds. auditlake: one `auditlake sql
             --repeat R --timings FILE q1 .. q5` process per round (the lake is
             opened once, then each query runs R times); DuckDB: one Python
             connection with views over the same files, `con.execute(sql)` timed
             (the result is materialised; fetchall() after the clock stops).
           - whole process: one OS process per query, best of --rounds: `auditlake
             sql --format json Q` (start, Delta log load, plan, run, print) vs the
             DuckDB CLI from PyPI (`duckdb-cli`: `duckdb -json -c "CREATE VIEW ..;
             Q"`), when installed.
           The goal of issue #8 is read on the in-process ratios.
  rss      (not in the default phases) peak RSS of `auditlake ingest` on a bigger
           file (--rss-events, default 50M) against its --memory-limit: the bound must
           hold however long the input.
Writes results.json into --work and prints a Markdown table for benches/RESULTS.md.
Phases: --phases gen,ingest,queries (default all); `--phases queries` reuses the
data and lake left in --work by an earlier run.
"""
import argparse, importlib.util, json, math, os, platform, re, shutil, statistics, subprocess, sys, tempfile, time
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


def duck_query(con, sql, repeat):
    """Best in-process time of `repeat` runs (execute materialises the result), and the rows."""
    best = float("inf")
    rows = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        cur = con.execute(sql)
        best = min(best, time.perf_counter() - t0)
        rows = cur.fetchall()
    return best, len(rows)


def duck_cli():
    """The DuckDB CLI binary of the `duckdb-cli` PyPI package, or None."""
    spec = importlib.util.find_spec("duckdb_cli")
    if spec is None or not spec.submodule_search_locations:
        return None
    exe = Path(list(spec.submodule_search_locations)[0]) / "duckdb"
    return str(exe) if exe.exists() else None


def duck_views(lake):
    return (f"CREATE VIEW api_access AS SELECT * FROM read_parquet('{lake}/api_access/*/*.parquet', hive_partitioning=true); "
            f"CREATE VIEW grants AS SELECT * FROM read_parquet('{lake}/grants/*/*.parquet', hive_partitioning=true);")


def bench_queries(args, lake, env, res):
    """In-process and whole-process times of both engines on the same lake."""
    con = duckdb.connect()
    con.execute(duck_views(lake))
    user = con.execute("SELECT user_id FROM api_access WHERE user_id IS NOT NULL GROUP BY user_id ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    sqls = {name: sql.format(user=user) for name, sql in QUERIES.items()}
    names = list(sqls)
    a_best = {n: float("inf") for n in names}
    d_best = {n: float("inf") for n in names}
    a_rows, d_rows, a_open = {}, {}, float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        tfile = Path(tmp) / "timings.json"
        for _ in range(args.rounds):
            run([args.bin, "sql", "--lake", str(lake), "--format", "json", "--repeat", str(args.repeat),
                 "--timings", str(tfile)] + [sqls[n] for n in names], env)
            t = json.loads(tfile.read_text())
            a_open = min(a_open, t["open_ms"] / 1000)
            for n, q in zip(names, t["queries"]):
                a_best[n] = min(a_best[n], q["best_ms"] / 1000)
                a_rows[n] = q["rows"]
            for n in names:
                d, d_rows[n] = duck_query(con, sqls[n], args.repeat)
                d_best[n] = min(d_best[n], d)
    cli = duck_cli()
    res["duckdb_cli"] = subprocess.run([cli, "--version"], capture_output=True, text=True).stdout.strip() if cli else None
    res["auditlake_open_s"] = a_open
    res["queries"] = {}
    for n in names:
        a_proc = d_proc = float("inf")
        for _ in range(args.rounds):
            s, _, out = run([args.bin, "sql", "--lake", str(lake), "--format", "json", sqls[n]], env)
            a_proc = min(a_proc, s)
            if cli:
                s, _, _ = run([cli, "-json", "-c", duck_views(lake) + " " + sqls[n]])
                d_proc = min(d_proc, s)
        q = {"auditlake_s": a_best[n], "duckdb_s": d_best[n], "ratio": a_best[n] / d_best[n],
             "auditlake_process_s": a_proc, "duckdb_process_s": d_proc if cli else None,
             "process_ratio": a_proc / d_proc if cli else None,
             "auditlake_rows": a_rows[n], "duckdb_rows": d_rows[n]}
        if a_rows[n] != d_rows[n]:
            sys.exit(f"query {n}: auditlake returned {a_rows[n]} rows, DuckDB {d_rows[n]}")
        res["queries"][n] = q
        proc = f"; whole process {a_proc * 1000:.0f} vs {d_proc * 1000:.0f} ms" if cli else ""
        print(f"query {n}: in-process auditlake {a_best[n] * 1000:.1f} ms, duckdb {d_best[n] * 1000:.1f} ms "
              f"({q['ratio']:.2f}x){proc}; {a_rows[n]} rows", flush=True)
    res["queries_geomean_ratio"] = geomean([q["ratio"] for q in res["queries"].values()])
    if cli:
        res["queries_process_geomean_ratio"] = geomean([q["process_ratio"] for q in res["queries"].values()])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--phases", default="gen,ingest,queries",
                    help="comma-separated subset of gen,ingest,queries; later phases reuse --work")
    ap.add_argument("--repeat", type=int, default=5, help="in-process runs of each query per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (processes) per engine; best is kept")
    ap.add_argument("--memory-limit", default="1GiB", help="auditlake ingest --memory-limit")
    ap.add_argument("--ingest-runs", type=int, default=3,
                    help="ingest runs per engine and core count, alternating; the median is kept")
    ap.add_argument("--rss-events", type=int, default=50_000_000, help="events of the rss phase")
    args = ap.parse_args()
    if args.ingest_runs < 1:
        ap.error(f"--ingest-runs must be at least 1, not {args.ingest_runs}")
    phases = set(args.phases.split(","))
    work = Path(args.work)
    if "gen" in phases:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    env = dict(os.environ, AUDITLAKE_LOG="warn")
    res = {"events": args.events, "machine": {
        "nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
        "duckdb": duckdb.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "repeat": args.repeat, "rounds": args.rounds}

    if "gen" in phases:
        secs, rss, _ = run([args.bin, "gen", "--out", str(data), "--events", str(args.events), "--seed", "1"], env)
        res["gen"] = {"seconds": secs, "events_per_s": args.events / secs}
        print(f"gen: {secs:.1f}s ({args.events / secs:,.0f} ev/s)", flush=True)
    manifest = json.loads((data / "manifest.json").read_text())
    res["events"] = manifest["topics"]["api-access"]["distinct_events"]
    lines = manifest["topics"]["api-access"]["lines"]
    stored = manifest["topics"]["api-access"]["distinct_events"]
    src = data / "api-access.jsonl"

    res["ingest"] = {}
    for label, pin, threads in [("1 core", "0", 1), ("2 cores", None, os.cpu_count())] if "ingest" in phases else []:
        # Runs alternate between the engines (the host's load drifts), each
        # on a fresh output; the median of each engine is kept.
        lake = work / f"lake-{threads}"
        out = work / f"duck-{threads}.parquet"
        a_runs, d_runs, rss_runs = [], [], []
        for _ in range(args.ingest_runs):
            shutil.rmtree(lake, ignore_errors=True)
            s, r, _ = run([args.bin, "ingest", "--lake", str(lake), "--memory-limit", args.memory_limit,
                           "--input", f"api-access={src}"], env, pin)
            a_runs.append(s)
            rss_runs.append(r)
            out.unlink(missing_ok=True)
            if pin:
                d = float(subprocess.check_output(
                    ["taskset", "-c", pin, sys.executable, __file__, "--duck-ingest", str(src), str(out), "1"]))
            else:
                d = duck_ingest(src, out, threads)
            d_runs.append(d)
        s, d, r = statistics.median(a_runs), statistics.median(d_runs), max(rss_runs)
        res["ingest"][label] = {
            "auditlake_s": s, "auditlake_ev_s": lines / s, "auditlake_rss_mib": r,
            "memory_limit_mib": mib(args.memory_limit),
            "duckdb_s": d, "duckdb_ev_s": lines / d,
            "auditlake_runs_s": a_runs, "duckdb_runs_s": d_runs,
            "auditlake_bytes_per_event": parquet_bytes(lake / "api_access") / stored,
            "duckdb_bytes_per_event": out.stat().st_size / lines,
        }
        print(f"ingest {label}: auditlake {lines / s:,.0f} ev/s ({r:.0f} MiB), duckdb {lines / d:,.0f} ev/s "
              f"(medians; runs auditlake {', '.join(f'{x:.2f}' for x in a_runs)} s, "
              f"duckdb {', '.join(f'{x:.2f}' for x in d_runs)} s)", flush=True)

    if "rss" in phases:
        bench_rss(args, work, env, res)

    if "queries" in phases:
        # Grants too, for the anti-join (a rerun of the ingest changes nothing).
        lake = work / f"lake-{os.cpu_count()}"
        run([args.bin, "ingest", "--lake", str(lake), "--input", f"grants={data / 'grants.jsonl'}"], env)
        bench_queries(args, lake, env, res)
    (work / "results.json").write_text(json.dumps(res, indent=2))
    print(f"results: {work / 'results.json'}", flush=True)
    print(markdown(res))


def mib(size):
    """MiB in a size such as 1GiB or 768MiB."""
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", size.strip(), re.I)
    n, unit = int(m.group(1)), (m.group(2) or "").upper()[:1]
    return n * {"": 1 / 2**20, "K": 1 / 1024, "M": 1, "G": 1024}[unit]


def bench_rss(args, work, env, res):
    """Peak RSS of one ingest of --rss-events events against --memory-limit."""
    data = work / "rss-data"
    shutil.rmtree(data, ignore_errors=True)
    run([args.bin, "gen", "--out", str(data), "--events", str(args.rss_events), "--seed", "2"], env)
    lines = json.loads((data / "manifest.json").read_text())["topics"]["api-access"]["lines"]
    lake = work / "rss-lake"
    shutil.rmtree(lake, ignore_errors=True)
    s, r, _ = run([args.bin, "ingest", "--lake", str(lake), "--memory-limit", args.memory_limit,
                   "--input", f"api-access={data / 'api-access.jsonl'}"], env)
    res["rss"] = {"events": lines, "seconds": s, "ev_s": lines / s, "rss_mib": r,
                  "memory_limit_mib": mib(args.memory_limit)}
    print(f"rss: {lines:,} events in {s:.1f} s ({lines / s:,.0f} ev/s), peak RSS {r:.0f} MiB "
          f"(limit {mib(args.memory_limit):.0f} MiB)", flush=True)
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(lake, ignore_errors=True)


def geomean(xs):
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
    for label, i in res.get("ingest", {}).items():
        out.append(f"| ingest, {label} (events/s) | {i['auditlake_ev_s']:,.0f} | {i['duckdb_ev_s']:,.0f} | "
                   f"{i['auditlake_ev_s'] / i['duckdb_ev_s']:.2f}x throughput |")
        out.append(f"| bytes per event, {label} | {i['auditlake_bytes_per_event']:.1f} | {i['duckdb_bytes_per_event']:.1f} | "
                   f"{i['auditlake_bytes_per_event'] / i['duckdb_bytes_per_event']:.2f} |")
        out.append(f"| ingest peak RSS, {label} (MiB; --memory-limit {i['memory_limit_mib']:.0f}) | "
                   f"{i['auditlake_rss_mib']:.0f} | | |")
    if "rss" in res:
        r = res["rss"]
        out.append(f"| ingest peak RSS at {r['events']:,} events (MiB; --memory-limit {r['memory_limit_mib']:.0f}) | "
                   f"{r['rss_mib']:.0f} | | {r['ev_s']:,.0f} events/s on {m['nproc']} cores |")
    if "queries" in res:
        for name, q in res["queries"].items():
            out.append(f"| {name}, in-process (ms) | {q['auditlake_s'] * 1000:.1f} | {q['duckdb_s'] * 1000:.1f} | {q['ratio']:.2f} |")
        out.append(f"| analyst queries in-process, geometric mean of ratios | | | **{res['queries_geomean_ratio']:.2f}** |")
        if res.get("duckdb_cli"):
            for name, q in res["queries"].items():
                out.append(f"| {name}, whole process (ms) | {q['auditlake_process_s'] * 1000:.0f} | "
                           f"{q['duckdb_process_s'] * 1000:.0f} | {q['process_ratio']:.2f} |")
            out.append(f"| analyst queries whole process, geometric mean of ratios | | | "
                       f"{res['queries_process_geomean_ratio']:.2f} |")
        out.append(f"\nIn-process: best of {res['repeat']} runs x {res['rounds']} rounds in a warm session "
                   f"(auditlake opens the lake in {res['auditlake_open_s'] * 1000:.0f} ms, not counted). Whole process: "
                   f"best of {res['rounds']} processes; DuckDB CLI {res.get('duckdb_cli') or 'not installed'}.")
    if res.get("ingest"):
        runs = len(next(iter(res["ingest"].values()))["auditlake_runs_s"])
        out.append(f"\nIngest: median of {runs} runs per engine, alternating; peak RSS the highest of them.")
    if "gen" in res:
        g = res["gen"]
        out.append(f"\ngen: {g['events_per_s']:,.0f} access events/s ({g['seconds']:.1f} s).")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--duck-ingest":
        print(duck_ingest(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        main()
