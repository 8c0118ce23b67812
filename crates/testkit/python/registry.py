"""A fake Confluent Schema Registry for tests.

Why: calve decodes Confluent-framed Avro (magic 0x00 + 4-byte schema id) and looks the
writer schemas up over the registry's REST API. The real registry is a JVM service that cannot
be installed on the test machines, so this speaks the subset of its REST API that serializers
(confluent-kafka's among them) and calve use, with the real semantics where they matter:

* ids are global and immutable; registering a schema already known (by content) anywhere
  returns its id, and under a subject that already has it, without a new version;
* registering checks compatibility against the subject's versions per the effective level
  (NONE, BACKWARD[_TRANSITIVE], FORWARD[_TRANSITIVE], FULL[_TRANSITIVE]; global default
  BACKWARD) with Apache Avro's own ReaderWriterCompatibilityChecker; PROTOBUF and JSON schemas
  are stored and served without checks;
* errors carry the registry's error codes (40401 subject, 40402 version, 40403 schema, 40408
  no subject config, 409 incompatible, 42201 invalid schema, 42202 version, 42203 level);
* AVRO schemas are stored in a normalised compact form and served with `schemaType` omitted,
  as the real registry does; references are served only when present;
* PROTOBUF schemas are served as registered: `.proto` text (what the real registry serves by
  default) or the base64 serialized `FileDescriptorProto` confluent-kafka's serializers
  register (the real registry would serve that as text too; calve reads both). With
  `?format=serialized` (what confluent-kafka's clients ask for), a schema registered as text
  is served serialized, compiled by protoc (grpcio-tools) with its references.

Test controls, outside the real API (never logged, never faulted, never authenticated):

* `POST /_fault` `{"status": 503, "delay_seconds": 2, "drop": true, "for_seconds": 30,
  "count": 3, "path_prefix": "/schemas"}`: from now on, requests (whose path starts with
  `path_prefix`, if given) are delayed, dropped (connection closed without an answer) and/or
  answered `status`, for `for_seconds` (default: until cleared) and/or the next `count`
  matching requests. Each of status / delay / drop is its own fault; a POST replaces those it
  names. `POST /_fault/clear` removes all.
* `GET /_requests` -> `{"count": N, "requests": [{"method", "path", "query", "status",
  "fault", "t"}]}` for every API request (status null when dropped); `POST /_requests/clear`.

Optional HTTP basic auth (`--user U --password P`): API requests without it get 401.

Run: `python registry.py --host 127.0.0.1 --port P [--user U --password P]`; prints
`READY <port>` on stdout once listening and serves until killed. Requests are logged to stderr.
"""
import argparse
import base64
import copy
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import protoc
import avro.name
import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

LEVELS = {"NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL",
          "FULL_TRANSITIVE"}
TYPES = ("AVRO", "PROTOBUF", "JSON")
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPTED_BODY_TYPES = {"", CONTENT_TYPE, "application/vnd.schemaregistry+json", "application/json",
                       "application/octet-stream"}


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Registry:
    """The registry's state; every public method takes the lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.schemas = []  # index id-1: {"schema", "type", "refs", "parsed"}
        self.ids_by_key = {}  # identity of (type, schema, references) -> id
        self.subjects = {}  # subject -> [id of version 1, id of version 2, ...]
        self.global_level = "BACKWARD"
        self.levels = {}  # subject -> level

    # --- parsing ---------------------------------------------------------------------------

    def _parse(self, text, stype, refs, depth=0):
        """(canonical text, identity key, parsed Avro schema or None, names it defines)."""
        if not isinstance(text, str) or not text.strip():
            raise ApiError(422, 42201, "Empty schema")
        if stype not in TYPES:
            raise ApiError(422, 42201, f"Invalid schema type {stype}")
        if not isinstance(refs, list) or depth > 32:
            raise ApiError(422, 42201, "Invalid references")
        refs_key = json.dumps(refs, sort_keys=True)
        if stype != "AVRO":
            return text, (stype, text.strip(), refs_key), None, None
        names = avro.name.Names()
        for ref in refs:  # named types the schema uses from other subjects' versions
            try:
                target = self._version(ref["subject"], ref["version"])
                entry = self.schemas[target - 1]
                _, _, _, ref_names = self._parse(entry["schema"], "AVRO", entry["refs"], depth + 1)
            except (ApiError, KeyError, TypeError) as e:
                raise ApiError(422, 42201, f"Invalid schema: bad reference {ref}: {e}")
            names.names.update(ref_names.names)
        known = dict(names.names)
        try:
            parsed = avro.schema.make_avsc_object(json.loads(text), names)
        except Exception as e:  # noqa: BLE001 - any parse failure is an invalid schema
            raise ApiError(422, 42201, f"Invalid schema {text}: {e}")
        out_names = avro.name.Names()
        out_names.names = dict(known)  # referenced types stay references in the canonical form
        form = parsed.to_json(out_names)
        canonical = json.dumps(form, separators=(",", ":"))
        return canonical, ("AVRO", json.dumps(form, sort_keys=True), refs_key), parsed, names

    def _entry(self, body):
        if not isinstance(body, dict):
            raise ApiError(422, 42201, "Invalid schema: body must be a JSON object")
        stype = body.get("schemaType") or "AVRO"
        refs = body.get("references") or []
        canonical, key, parsed, _ = self._parse(body.get("schema"), stype, refs)
        return {"schema": canonical, "type": stype, "refs": refs, "parsed": parsed}, key

    # --- lookups -----------------------------------------------------------------------------

    def _versions(self, subject):
        ids = self.subjects.get(subject)
        if not ids:
            raise ApiError(404, 40401, f"Subject '{subject}' not found.")
        return ids

    def _version(self, subject, version):
        """The schema id of `version` (int, "latest" or -1) of `subject`."""
        ids = self._versions(subject)
        if str(version) in ("latest", "-1"):
            return ids[-1]
        try:
            v = int(version)
            if v < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise ApiError(422, 42202, f"The specified version '{version}' is not a valid version "
                           "id. Allowed values are between [1, 2^31-1] and the string \"latest\"")
        if v > len(ids):
            raise ApiError(404, 40402, f"Version {v} not found.")
        return ids[v - 1]

    def _schema_json(self, schema_id, **extra):
        entry = self.schemas[schema_id - 1]
        out = dict(extra)
        out["schema"] = entry["schema"]
        if entry["type"] != "AVRO":
            out["schemaType"] = entry["type"]
        if entry["refs"]:
            out["references"] = entry["refs"]
        return out

    def _version_json(self, subject, schema_id):
        version = self.subjects[subject].index(schema_id) + 1
        return self._schema_json(schema_id, subject=subject, version=version, id=schema_id)

    def serialized(self, out):
        """`out` (a schema's JSON) with a PROTOBUF text schema as its serialized descriptor."""
        if out.get("schemaType") != "PROTOBUF" or not protoc.is_text(out["schema"]):
            return out
        files = {}
        todo = [("calve-fake-registry-main.proto", out["schema"], out.get("references") or [])]
        while todo:
            name, text, refs = todo.pop()
            if name in files:
                continue
            files[name] = text
            for ref in refs:
                entry = self.schemas[self._version(ref["subject"], ref["version"]) - 1]
                todo.append((ref["name"], entry["schema"], entry["refs"]))
        out = dict(out)
        out["schema"] = _compile_proto(files, "calve-fake-registry-main.proto")
        return out

    def level(self, subject):
        return self.levels.get(subject, self.global_level)

    # --- compatibility ------------------------------------------------------------------------

    @staticmethod
    def _incompatibilities(level, new, olds):
        """Messages why `new` may not follow `olds` (oldest first) under `level`; [] if it may."""
        if level == "NONE":
            return []
        if not level.endswith("_TRANSITIVE"):
            olds = olds[-1:]
        out = []
        for old in olds:
            if old["type"] != new["type"]:
                out.append(f"schema type {new['type']} differs from {old['type']}")
                continue
            if new["type"] != "AVRO":
                continue  # stored without checks
            pairs = []
            if level.startswith(("BACKWARD", "FULL")):
                pairs.append(("reader", new["parsed"], old["parsed"]))
            if level.startswith(("FORWARD", "FULL")):
                pairs.append(("writer", old["parsed"], new["parsed"]))
            for role, reader, writer in pairs:
                res = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
                if res.compatibility is not SchemaCompatibilityType.compatible:
                    kinds = ",".join(sorted(i.name.upper() for i in res.incompatibilities))
                    out.append(f"{{type:{kinds}, location:{','.join(sorted(res.locations))}, "
                               f"message:{'; '.join(sorted(res.messages))}, new schema as:{role}}}")
        return out

    # --- API operations ------------------------------------------------------------------------

    def register(self, subject, body):
        with self.lock:
            entry, key = self._entry(body)
            ids = self.subjects.get(subject, [])
            existing = self.ids_by_key.get(key)
            if existing is not None and existing in ids:
                return {"id": existing}
            level = self.level(subject)
            problems = self._incompatibilities(level, entry, [self.schemas[i - 1] for i in ids])
            if problems:
                raise ApiError(409, 409, "Schema being registered is incompatible with an earlier "
                               f"schema for subject \"{subject}\" ({level}): " + " | ".join(problems))
            if existing is None:
                self.schemas.append(entry)
                existing = len(self.schemas)
                self.ids_by_key[key] = existing
            self.subjects.setdefault(subject, []).append(existing)
            return {"id": existing}

    def lookup(self, subject, body):
        with self.lock:
            ids = self._versions(subject)
            _, key = self._entry(body)
            found = self.ids_by_key.get(key)
            if found is None or found not in ids:
                raise ApiError(404, 40403, "Schema not found")
            return self._version_json(subject, found)

    def compatibility(self, subject, version, body, verbose):
        with self.lock:
            entry, _ = self._entry(body)
            level = self.level(subject)
            if version is None:
                olds = [self.schemas[i - 1] for i in self.subjects.get(subject, [])]
            else:
                olds = [self.schemas[self._version(subject, version) - 1]]
                level = level.replace("_TRANSITIVE", "")
            problems = self._incompatibilities(level, entry, olds)
            out = {"is_compatible": not problems}
            if verbose:
                out["messages"] = problems
            return out

    def schema_by_id(self, schema_id):
        with self.lock:
            if not 1 <= schema_id <= len(self.schemas):
                raise ApiError(404, 40403, f"Schema {schema_id} not found")
            return self._schema_json(schema_id)

    def id_versions(self, schema_id):
        with self.lock:
            if not 1 <= schema_id <= len(self.schemas):
                raise ApiError(404, 40403, f"Schema {schema_id} not found")
            return [{"subject": s, "version": ids.index(schema_id) + 1}
                    for s, ids in sorted(self.subjects.items()) if schema_id in ids]


def _compile_proto(files, main):
    """The base64 serialized FileDescriptorProto of `main`, compiled with `files`."""
    try:
        fds = protoc.compile_files(files, main)
    except ValueError as e:
        raise ApiError(422, 42201, f"Invalid schema: {e}")
    return base64.standard_b64encode(fds.file[-1].SerializeToString()).decode("ascii")


def _auth_ok(header, user, password):
    if user is None:
        return True
    want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return header == want


class Faults:
    """Injected faults: kind ("status" | "delay" | "drop") -> its settings."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = {}

    def set(self, spec):
        now = time.monotonic()
        until = now + float(spec["for_seconds"]) if spec.get("for_seconds") is not None else None
        common = {"until": until, "count": spec.get("count"), "prefix": spec.get("path_prefix", "")}
        with self.lock:
            if spec.get("status") is not None:
                self.active["status"] = dict(common, value=int(spec["status"]))
            if spec.get("delay_seconds") is not None:
                self.active["delay"] = dict(common, value=float(spec["delay_seconds"]))
            if spec.get("drop"):
                self.active["drop"] = dict(common, value=True)
            return {k: {"value": v["value"], "count": v["count"]} for k, v in self.active.items()}

    def clear(self):
        with self.lock:
            self.active.clear()

    def take(self, path):
        """The faults that apply to this request (counting it against their `count`)."""
        now = time.monotonic()
        out = {}
        with self.lock:
            for kind, f in list(self.active.items()):
                if f["until"] is not None and now >= f["until"]:
                    del self.active[kind]
                    continue
                if not path.startswith(f["prefix"]):
                    continue
                out[kind] = f["value"]
                if f["count"] is not None:
                    f["count"] -= 1
                    if f["count"] <= 0:
                        del self.active[kind]
        return out


ROUTES = [  # (method, path regex, handler name)
    ("GET", r"/", "root"),
    ("GET", r"/schemas/types", "types"),
    ("GET", r"/schemas/ids/(\d+)", "get_schema"),
    ("GET", r"/schemas/ids/(\d+)/schema", "get_schema_raw"),
    ("GET", r"/schemas/ids/(\d+)/versions", "get_id_versions"),
    ("GET", r"/schemas/ids/(\d+)/subjects", "get_id_subjects"),
    ("GET", r"/subjects", "list_subjects"),
    ("GET", r"/subjects/([^/]+)/versions", "list_versions"),
    ("GET", r"/subjects/([^/]+)/versions/([^/]+)", "get_version"),
    ("GET", r"/subjects/([^/]+)/versions/([^/]+)/schema", "get_version_raw"),
    ("POST", r"/subjects/([^/]+)/versions", "register"),
    ("POST", r"/subjects/([^/]+)", "lookup"),
    ("POST", r"/compatibility/subjects/([^/]+)/versions/([^/]+)", "compat_version"),
    ("POST", r"/compatibility/subjects/([^/]+)/versions", "compat_all"),
    ("GET", r"/config", "get_global_config"),
    ("PUT", r"/config", "put_global_config"),
    ("GET", r"/config/([^/]+)", "get_config"),
    ("PUT", r"/config/([^/]+)", "put_config"),
    ("DELETE", r"/config/([^/]+)", "delete_config"),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect of the real one
    server_version = "fake-schema-registry"
    registry: Registry = None
    faults: Faults = None
    requests_log: list = None
    log_lock = threading.Lock()
    user = password = None

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def log_message(self, fmt, *args):
        sys.stderr.write("registry: " + (fmt % args) + "\n")

    # --- plumbing ------------------------------------------------------------------------

    def reply(self, status, obj, headers=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        return status

    def error(self, status, code, message, headers=()):
        return self.reply(status, {"error_code": code, "message": message}, headers)

    def record(self, path, query, status, fault):
        with self.log_lock:
            self.requests_log.append({"method": self.command, "path": path, "query": query,
                                      "status": status, "fault": fault, "t": time.time()})

    def handle_any(self, method):
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path.startswith("/_"):
            return self.control(method, path, raw)
        fault = self.faults.take(path)
        if "delay" in fault:
            time.sleep(fault["delay"])
        if fault.get("drop"):
            self.record(path, url.query, None, "drop")
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if "status" in fault:
            status = self.error(fault["status"], fault["status"], f"Injected fault {fault['status']}")
            return self.record(path, url.query, status, "status")
        status = self.api(method, path, query, raw)
        self.record(path, url.query, status, "delay" if "delay" in fault else None)

    def api(self, method, path, query, raw):
        if not _auth_ok(self.headers.get("Authorization"), self.user, self.password):
            return self.error(401, 401, "Unauthorized",
                              [("WWW-Authenticate", 'Basic realm="SchemaRegistry"')])
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw and ctype not in ACCEPTED_BODY_TYPES:
            return self.error(415, 415, "HTTP 415 Unsupported Media Type")
        try:
            body = json.loads(raw) if raw else None
        except ValueError as e:
            return self.error(400, 400, f"Unexpected character: {e}")
        allowed = False
        for m, pattern, name in ROUTES:
            match = re.fullmatch(pattern, path)
            if match:
                allowed = True
                if m == method:
                    args = [unquote(a) for a in match.groups()]
                    try:
                        return self.reply(200, getattr(self, "api_" + name)(*args, query=query, body=body))
                    except ApiError as e:
                        return self.error(e.status, e.code, e.message)
                    except Exception as e:  # noqa: BLE001 - a bug here must still answer
                        return self.error(500, 50001, f"Error in the fake registry: {e!r}")
        if allowed:
            return self.error(405, 405, "HTTP 405 Method Not Allowed")
        return self.error(404, 404, "HTTP 404 Not Found")

    def control(self, method, path, raw):
        body = json.loads(raw) if raw else {}
        if (method, path) == ("POST", "/_fault"):
            return self.reply(200, self.faults.set(body))
        if (method, path) == ("POST", "/_fault/clear"):
            self.faults.clear()
            return self.reply(200, {})
        if (method, path) == ("GET", "/_requests"):
            with self.log_lock:
                log = copy.deepcopy(self.requests_log)
            return self.reply(200, {"count": len(log), "requests": log})
        if (method, path) == ("POST", "/_requests/clear"):
            with self.log_lock:
                self.requests_log.clear()
            return self.reply(200, {})
        return self.error(404, 404, "no such control endpoint")

    # --- API endpoints ----------------------------------------------------------------------

    def api_root(self, query, body):
        return {}

    def api_types(self, query, body):
        return list(TYPES)

    def api_get_schema(self, schema_id, query, body):
        out = self.registry.schema_by_id(int(schema_id))
        with self.registry.lock:
            return self.registry.serialized(out) if query.get("format") == "serialized" else out

    def api_get_schema_raw(self, schema_id, query, body):
        return _raw(self.registry.schema_by_id(int(schema_id)))

    def api_get_id_versions(self, schema_id, query, body):
        return self.registry.id_versions(int(schema_id))

    def api_get_id_subjects(self, schema_id, query, body):
        return sorted({v["subject"] for v in self.registry.id_versions(int(schema_id))})

    def api_list_subjects(self, query, body):
        with self.registry.lock:
            return sorted(self.registry.subjects)

    def api_list_versions(self, subject, query, body):
        with self.registry.lock:
            return list(range(1, len(self.registry._versions(subject)) + 1))

    def api_get_version(self, subject, version, query, body):
        with self.registry.lock:
            out = self.registry._version_json(subject, self.registry._version(subject, version))
            return self.registry.serialized(out) if query.get("format") == "serialized" else out

    def api_get_version_raw(self, subject, version, query, body):
        return _raw(self.api_get_version(subject, version, query, body))

    def api_register(self, subject, query, body):
        return self.registry.register(subject, body)

    def api_lookup(self, subject, query, body):
        return self.registry.lookup(subject, body)

    def api_compat_version(self, subject, version, query, body):
        return self.registry.compatibility(subject, version, body, query.get("verbose") == "true")

    def api_compat_all(self, subject, query, body):
        return self.registry.compatibility(subject, None, body, query.get("verbose") == "true")

    def api_get_global_config(self, query, body):
        return {"compatibilityLevel": self.registry.global_level}

    def api_put_global_config(self, query, body):
        self.registry.global_level = _level(body)
        return {"compatibility": self.registry.global_level}

    def api_get_config(self, subject, query, body):
        with self.registry.lock:
            if subject in self.registry.levels:
                return {"compatibilityLevel": self.registry.levels[subject]}
            if query.get("defaultToGlobal") == "true":
                return {"compatibilityLevel": self.registry.global_level}
        raise ApiError(404, 40408, f"Subject '{subject}' does not have subject-level "
                       "compatibility configured")

    def api_put_config(self, subject, query, body):
        with self.registry.lock:
            self.registry.levels[subject] = _level(body)
            return {"compatibility": self.registry.levels[subject]}

    def api_delete_config(self, subject, query, body):
        with self.registry.lock:
            if subject not in self.registry.levels:
                raise ApiError(404, 40401, f"Subject '{subject}' not found.")
            return {"compatibilityLevel": self.registry.levels.pop(subject)}


def _raw(schema_json):
    """The schema itself (parsed JSON for AVRO/JSON, the text for PROTOBUF)."""
    if schema_json.get("schemaType") == "PROTOBUF":
        return schema_json["schema"]
    return json.loads(schema_json["schema"])


def _level(body):
    level = (body or {}).get("compatibility")
    if not isinstance(level, str) or level.upper() not in LEVELS:
        raise ApiError(422, 42203, f"Invalid compatibility level. Valid values are {sorted(LEVELS)}")
    return level.upper()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()
    if (args.user is None) != (args.password is None):
        ap.error("give both --user and --password, or neither")
    Handler.registry, Handler.faults, Handler.requests_log = Registry(), Faults(), []
    Handler.user, Handler.password = args.user, args.password
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
