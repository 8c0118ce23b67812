"""Reads a calve table with engines calve did not write: PyIceberg and DuckDB.

Prints one JSON object: for each reader the selected columns of every row (sorted), plus
PyIceberg's view of files, partitions and snapshot summaries, so Rust tests can assert on
what a foreign engine sees rather than on what calve believes it wrote.
"""
import argparse
import datetime
import decimal
import glob
import json
import os
import sys
import uuid


def plain(v):
    """One JSON form for what both readers return: nested values recursively, maps as objects
    (PyArrow gives a list of (key, value) pairs, DuckDB a dict), UUIDs and bytes as hex."""
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return v.hex
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, dict):
        if set(v) == {"key", "value"} and isinstance(v["key"], list) and isinstance(v["value"], list):
            return {str(plain(k)): plain(x) for k, x in zip(v["key"], v["value"])}
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(x, tuple) and len(x) == 2 for x in v):
            return {str(plain(k)): plain(x) for k, x in v}
        return [plain(x) for x in v]
    return v


def rows_of(table_or_rel_rows, columns):
    out = [[plain(r[c]) for c in columns] for r in table_or_rel_rows]
    out.sort(key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return out


def inspect_files(t):
    """PyIceberg's files and entries tables; when it cannot build them (its column metrics do
    not support every type, e.g. uuid), the same fields read from the manifests directly."""
    if not t.current_snapshot():
        return [], []
    try:
        return t.inspect.files().to_pylist(), t.inspect.entries().to_pylist()
    except Exception:
        names = [f.name for f in t.spec().fields]
        files, entries = [], []
        for m in t.current_snapshot().manifests(t.io):
            for e in m.fetch_manifest_entry(t.io, discard_deleted=False):
                df = e.data_file
                part = {n: df.partition[i] for i, n in enumerate(names)}
                if int(e.status) != 2:
                    files.append({"content": int(df.content), "file_path": df.file_path,
                                  "record_count": df.record_count, "partition": part})
                entries.append({"status": int(e.status), "snapshot_id": e.snapshot_id,
                                "data_file": {"partition": part}})
        return files, entries


def read_pyiceberg(args, columns):
    from catalogs import open_catalog

    cat = open_catalog(args)
    t = cat.load_table(args.table)
    arrow = t.scan(selected_fields=tuple(columns)).to_arrow()
    files, entries = inspect_files(t)
    return t, {
        "rows": rows_of(arrow.to_pylist(), columns),
        "metadata_location": t.metadata_location,
        "files": [
            {
                "content": f["content"],
                "file_path": f["file_path"],
                "record_count": f["record_count"],
                "partition": {k: plain(v) for k, v in (f.get("partition") or {}).items()},
            }
            for f in files
        ],
        "added_entries": [
            {"snapshot_id": e["snapshot_id"], "partition": json.dumps({k: plain(v) for k, v in ((e.get("data_file") or {}).get("partition") or {}).items()}, sort_keys=True)}
            for e in entries
            if e["status"] == 1
        ],
        "snapshots": [
            {"snapshot_id": s.snapshot_id, "parent": s.parent_snapshot_id, "sequence_number": s.sequence_number, "summary": s.summary.model_dump() if s.summary else {}}
            for s in t.snapshots()
        ],
        "current_summary": t.current_snapshot().summary.model_dump() if t.current_snapshot() and t.current_snapshot().summary else None,
        "spec": str(t.spec()),
        "sort_order": str(t.sort_order()),
        "schema": str(t.schema()),
        "properties": dict(t.properties),
    }


def duckdb_connection(storage=None):
    """DuckDB with its iceberg extension; with `storage` (S3 FileIO properties), also httpfs and
    a secret that reaches that endpoint."""
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    version = duckdb.__version__
    for name in ("avro", "iceberg") + (("httpfs",) if storage else ()):
        pattern = os.path.join(sys.prefix, "lib", "python*", "site-packages", f"duckdb_extension_{name}",
                               "extensions", f"v{version}", f"{name}.duckdb_extension")
        found = glob.glob(pattern)
        if not found:
            raise SystemExit(f"duckdb extension {name} for duckdb {version} not found ({pattern})")
        con.execute(f"INSTALL '{found[0]}'")
        con.execute(f"LOAD {name}")
    if storage:
        endpoint = storage.get("s3.endpoint", "")
        con.execute(
            "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, URL_STYLE ?, USE_SSL ?)",
            [
                storage.get("s3.access-key-id", ""),
                storage.get("s3.secret-access-key", ""),
                storage.get("s3.region", "us-east-1"),
                endpoint.split("://", 1)[-1],
                "path" if storage.get("s3.path-style-access") == "true" else "vhost",
                endpoint.startswith("https://"),
            ],
        )
    return con


def read_duckdb(metadata_location, columns, storage=None):
    con = duckdb_connection(storage)
    cols = ", ".join(f'"{c}"' for c in columns)
    rel = con.execute(f"SELECT {cols} FROM iceberg_scan('{metadata_location}')")
    names = [d[0] for d in rel.description]
    rows = [dict(zip(names, r)) for r in rel.fetchall()]
    return {"rows": rows_of(rows, columns)}


def main():
    p = argparse.ArgumentParser()
    from catalogs import add_catalog_args, add_table_args

    add_catalog_args(p)
    add_table_args(p)
    p.add_argument("--readers", default="pyiceberg,duckdb")
    args = p.parse_args()
    columns = args.columns.split(",")
    readers = args.readers.split(",")
    out = {}
    table, out["pyiceberg"] = read_pyiceberg(args, columns)
    if "duckdb" in readers:
        if table.current_snapshot() is None:
            out["duckdb"] = {"rows": []}
        else:
            from catalogs import catalog_properties

            storage = {k: v for k, v in catalog_properties(args).items() if k.startswith("s3.")}
            out["duckdb"] = read_duckdb(table.metadata_location, columns, storage)
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
