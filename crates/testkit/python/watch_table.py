"""Watches a table as a reader would while something changes it: every time the table's
current snapshot is a new one, reads that snapshot with PyIceberg and prints one JSON line
(snapshot id, its summary, the selected columns of every row; a column the snapshot's schema
lacks reads as null). Runs until the file --stop exists, then prints the catalog's tables of
the namespace as a last line, so a test can check what a swap left behind.
"""
import argparse
import json
import os
import sys
import time

from catalogs import add_catalog_args, add_table_args, open_catalog


def main():
    p = argparse.ArgumentParser()
    add_catalog_args(p)
    add_table_args(p)
    p.add_argument("--stop", required=True, help="stop once this file exists")
    args = p.parse_args()
    columns = args.columns.split(",")
    catalog = open_catalog(args)
    seen = set()
    while not os.path.exists(args.stop):
        try:
            t = catalog.load_table(args.table)
        except Exception as e:  # the table may not exist yet
            print(json.dumps({"error": str(e)}), flush=True)
            time.sleep(0.2)
            continue
        s = t.current_snapshot()
        if s is None or s.snapshot_id in seen:
            time.sleep(0.1)
            continue
        seen.add(s.snapshot_id)
        arrow = t.scan(snapshot_id=s.snapshot_id).to_arrow()
        names = set(arrow.column_names)
        rows = [[r.get(c) if c in names else None for c in columns] for r in arrow.to_pylist()]
        summary = dict(s.summary.additional_properties) if s.summary else {}
        summary["operation"] = str(s.summary.operation.value) if s.summary else None
        print(json.dumps({"snapshot_id": s.snapshot_id, "summary": summary, "rows": rows}, default=str), flush=True)
    namespace = args.table.rsplit(".", 1)[0]
    tables = [".".join(i) for i in catalog.list_tables(namespace)]
    print(json.dumps({"tables": sorted(tables)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
