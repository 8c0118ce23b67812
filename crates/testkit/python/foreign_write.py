"""Appends rows to a table with PyIceberg: the foreign writer in concurrency tests.

The table must have an `id` (long) column and a `ts` (timestamptz) column; every row gets
the same event time (2025-11-24T00:00:00Z)."""
import argparse
import datetime

import pyarrow as pa
from catalogs import add_catalog_args, open_catalog


def main():
    p = argparse.ArgumentParser()
    add_catalog_args(p)
    p.add_argument("--warehouse", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--ids", required=True, help="comma-separated")
    args = p.parse_args()
    cat = open_catalog(args)
    t = cat.load_table(args.table)
    ids = [int(i) for i in args.ids.split(",")]
    ts = datetime.datetime(2025, 11, 24, tzinfo=datetime.timezone.utc)
    data = pa.table({"id": ids, "ts": [ts] * len(ids)}, schema=t.schema().as_arrow())
    t.append(data)


if __name__ == "__main__":
    main()
