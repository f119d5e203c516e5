#!/usr/bin/env python3
"""Runs auditlake's detection SQL (query/src/views/*.sql, query/rules/*.sql) on
DuckDB over the lake's Parquet files: the same statements `auditlake detect`
runs on DataFusion, with the same parameters, for the benchmark in
benches/detect.sh.

usage: detect_duckdb.py LAKE_DIR NOW [--allowed-regions CN] [--threads N] [--out FILE]

Prints one JSON line per rule (id, findings, seconds) and a total on stderr;
with --out, the findings (rule_id, app_id, user_id, scope, event_ids) as JSON
lines for comparison with `auditlake detect`.
"""
import argparse, glob, json, os, re, sys, time

import duckdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIEWS = os.path.join(ROOT, "query", "src", "views")
RULES = os.path.join(ROOT, "query", "rules")
DEADLINES_H = {"unsubscribe": 24, "revoke": 24, "platform_order": 24, "user_request": 72, "termination": 72}
FALLBACK_H = 24


def bind(sql, params):
    # $name outside quotes and comments, like query/src/rules.rs `bind`.
    out, i = [], 0
    while i < len(sql):
        c = sql[i]
        if c in "'\"":
            j = sql.find(c, i + 1)
            j = len(sql) if j < 0 else j + 1
            out.append(sql[i:j]); i = j
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = len(sql) if j < 0 else j
            out.append(sql[i:j]); i = j
        elif c == "$":
            m = re.match(r"\$([A-Za-z0-9_]+)", sql[i:])
            if m and m.group(1) in params:
                out.append(params[m.group(1)]); i += len(m.group(0))
            else:
                out.append(c); i += 1
        else:
            out.append(c); i += 1
    return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lake")
    ap.add_argument("now")
    ap.add_argument("--allowed-regions", default="CN")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--materialize", action="store_true",
                    help="keep the `access` view in a temp table, as `auditlake detect` does by default")
    a = ap.parse_args()

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if a.threads:
        con.execute(f"SET threads = {a.threads}")
    started = time.time()
    for table in ["api_access", "grants", "apps", "deletions"]:
        files = os.path.join(a.lake, table, "**", "*.parquet")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{files}', hive_partitioning = true)")
    now = a.now.replace("Z", "+00:00")
    params = {
        "now": f"TIMESTAMPTZ '{now}'",
        "allowed_regions": ", ".join(f"'{r}'" for r in a.allowed_regions.split(",")),
    }
    rows = [f"('{r}', INTERVAL '{h * 3600} seconds')" for r, h in sorted(DEADLINES_H.items())]
    rows.append(f"('*', INTERVAL '{FALLBACK_H * 3600} seconds')")
    con.execute(f"CREATE VIEW policy_deadlines AS SELECT * FROM (VALUES {', '.join(rows)}) AS deadlines(reason, deadline)")
    for path in sorted(glob.glob(os.path.join(VIEWS, "*.sql"))):
        name = re.sub(r"^\d+_", "", os.path.basename(path))[:-4]
        con.execute(f"CREATE VIEW {name} AS {bind(open(path).read(), params)}")
        if a.materialize and name == "access":
            con.execute("CREATE TEMP TABLE access_tmp AS SELECT * FROM access")
            con.execute("DROP VIEW access")
            con.execute("ALTER TABLE access_tmp RENAME TO access")
    # Obligations once, as detect does (deletion_overdue reads them).
    t = time.time()
    con.execute("CREATE TEMP TABLE obligations_tmp AS SELECT * FROM obligations_at")
    con.execute("DROP VIEW obligations_at")
    con.execute("ALTER TABLE obligations_tmp RENAME TO obligations_at")
    n = con.execute("SELECT count(*) FROM obligations_at").fetchone()[0]
    print(json.dumps({"step": "obligations", "rows": n, "seconds": round(time.time() - t, 3)}), file=sys.stderr)
    found = []
    for path in sorted(glob.glob(os.path.join(RULES, "*.sql"))):
        rule = os.path.basename(path)[:-4]
        sql = bind(open(path).read(), params)
        t = time.time()
        rel = con.execute(sql)
        cols = [d[0] for d in rel.description]
        result = rel.fetchall()
        print(json.dumps({"rule": rule, "findings": len(result), "seconds": round(time.time() - t, 3)}), file=sys.stderr)
        for r in result:
            d = dict(zip(cols, r))
            found.append({"rule_id": rule, "app_id": d.get("app_id"), "user_id": d.get("user_id"),
                          "scope": d.get("scope"), "event_ids": sorted(d.get("event_ids") or [])})
    total = time.time() - started
    print(json.dumps({"step": "total", "findings": len(found), "seconds": round(total, 3)}), file=sys.stderr)
    if a.out:
        found.sort(key=lambda f: json.dumps(f, sort_keys=True))
        with open(a.out, "w") as f:
            for x in found:
                f.write(json.dumps(x, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
