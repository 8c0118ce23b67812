"""Opens the catalog a test names: a SQLite file, any SQLAlchemy URL (PostgreSQL), or the base
URL of an Iceberg REST catalog."""


def add_catalog_args(p):
    p.add_argument("--catalog-db", help="SQLite catalog file")
    p.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE",
                   help="a catalog property: FileIO settings (s3.endpoint, ...), a REST credential; repeatable")
    p.add_argument("--catalog-uri", help="a SQLAlchemy URL (e.g. PostgreSQL) or an http(s):// REST catalog")
    p.add_argument("--catalog-name", default="calve")


def add_table_args(p):
    """The table a script reads: where the warehouse is, its name, the columns to select."""
    p.add_argument("--warehouse", required=True)
    p.add_argument("--table", required=True)
    p.add_argument("--columns", required=True, help="comma-separated")


def catalog_properties(args):
    return dict(kv.split("=", 1) for kv in getattr(args, "prop", []))


def open_catalog(args):
    uri = args.catalog_uri or f"sqlite:///{args.catalog_db}"
    props = catalog_properties(args)
    if uri.startswith(("http://", "https://")):
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(args.catalog_name, uri=uri, warehouse=args.warehouse, **props)
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse = args.warehouse if "://" in args.warehouse else f"file://{args.warehouse}"
    return SqlCatalog(args.catalog_name, uri=uri, warehouse=warehouse, **props)
