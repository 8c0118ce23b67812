"""Times DuckDB queries over Iceberg tables given by metadata file: the reader-side cost of
how calve laid a table out, compared against the same rows laid out another way.

Input (stdin): {"tables": {"label": "<metadata.json>", ...}, "queries": {"name": "SQL with {t}"},
"repeats": 5, "repeats_for": {"label": 1}} (repeats_for: fewer runs for a slow baseline). Output: {"name": {"label": median seconds, ...}, ...} plus the row count each
query returned per table (they must agree, or the comparison is meaningless).
"""
import json
import statistics
import sys
import time

from foreign_read import duckdb_connection


def main():
    spec = json.load(sys.stdin)
    con = duckdb_connection()
    repeats = spec.get("repeats", 5)
    out = {}
    for name, sql in spec["queries"].items():
        queries = {label: sql.replace("{t}", f"iceberg_scan('{meta}')") for label, meta in spec["tables"].items()}
        # One untimed run each (warms caches and gives the result), then the timed runs
        # interleaved table by table, so drift in the machine's speed hits every table alike.
        results = {label: con.execute(q).fetchall() for label, q in queries.items()}
        runs = {label: spec.get("repeats_for", {}).get(label, repeats) for label in queries}
        times = {label: [] for label in queries}
        for r in range(max(runs.values())):
            for label, q in queries.items():
                if r < runs[label]:
                    t0 = time.perf_counter()
                    con.execute(q).fetchall()
                    times[label].append(time.perf_counter() - t0)
        out[name] = {
            label: {"seconds": statistics.median(times[label]), "result": json.loads(json.dumps(results[label], default=str))}
            for label in queries
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
