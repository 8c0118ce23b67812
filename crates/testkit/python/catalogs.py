"""Opens the catalog a test names: a SQLite file, any SQLAlchemy URL (PostgreSQL), or the base
URL of an Iceberg REST catalog."""


def add_catalog_args(p):
    p.add_argument("--catalog-db", help="SQLite catalog file")
    p.add_argument("--storage", action="append", default=[], metavar="KEY=VALUE",
                   help="a FileIO property (s3.endpoint, s3.region, ...); repeatable")
    p.add_argument("--catalog-uri", help="a SQLAlchemy URL (e.g. PostgreSQL) or an http(s):// REST catalog")
    p.add_argument("--catalog-name", default="calve")


def storage_properties(args):
    return dict(kv.split("=", 1) for kv in getattr(args, "storage", []))


def open_catalog(args):
    uri = args.catalog_uri or f"sqlite:///{args.catalog_db}"
    props = storage_properties(args)
    if uri.startswith(("http://", "https://")):
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(args.catalog_name, uri=uri, warehouse=args.warehouse, **props)
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse = args.warehouse if "://" in args.warehouse else f"file://{args.warehouse}"
    return SqlCatalog(args.catalog_name, uri=uri, warehouse=warehouse, **props)
