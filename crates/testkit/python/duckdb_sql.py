"""Runs SQL statements in DuckDB (with its iceberg extension), the way a reader following a
documented recipe would: `$name` placeholders in the SQL are replaced by the values given.

Usage: duckdb_sql.py NAME=VALUE ... < statements.sql. Statements are split at `;`; the rows
of the last one are printed as JSON (values as text).
"""
import json
import sys

from foreign_read import duckdb_connection


def main():
    sql = sys.stdin.read()
    # Longest names first, so `$a` does not replace the start of `$ab`.
    values = sorted((arg.split("=", 1) for arg in sys.argv[1:]), key=lambda kv: -len(kv[0]))
    for name, value in values:
        sql = sql.replace(f"${name}", value)
    con = duckdb_connection()
    rows = []
    for statement in (s for s in sql.split(";") if s.strip()):
        rows = con.execute(statement).fetchall()
    print(json.dumps([[None if v is None else str(v) for v in row] for row in rows]))


if __name__ == "__main__":
    main()
