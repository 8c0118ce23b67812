"""Opens the catalog a test names: a SQLite file, any SQLAlchemy URL (PostgreSQL), or the base
URL of an Iceberg REST catalog."""


def add_catalog_args(p):
    p.add_argument("--catalog-db", help="SQLite catalog file")
    p.add_argument("--catalog-uri", help="a SQLAlchemy URL (e.g. PostgreSQL) or an http(s):// REST catalog")
    p.add_argument("--catalog-name", default="calve")


def open_catalog(args):
    uri = args.catalog_uri or f"sqlite:///{args.catalog_db}"
    if uri.startswith(("http://", "https://")):
        from pyiceberg.catalog.rest import RestCatalog

        return RestCatalog(args.catalog_name, uri=uri, warehouse=args.warehouse)
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(args.catalog_name, uri=uri, warehouse=f"file://{args.warehouse}")
