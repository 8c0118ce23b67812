"""Times DuckDB queries over Iceberg tables given by metadata file: the reader-side cost of
how calve laid a table out, compared against the same rows laid out another way.

Input (stdin): {"tables": {"label": "<metadata.json>", ...}, "queries": {"name": "SQL with {t}"},
"repeats": 5}. Output: {"name": {"label": median seconds, ...}, ...} plus the row count each
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
        out[name] = {}
        for label, meta in spec["tables"].items():
            q = sql.replace("{t}", f"iceberg_scan('{meta}')")
            result = con.execute(q).fetchall()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                con.execute(q).fetchall()
                times.append(time.perf_counter() - t0)
            out[name][label] = {"seconds": statistics.median(times), "result": json.loads(json.dumps(result, default=str))}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
