"""Produces Confluent-framed Avro (or, with --serializer json, JSON Schema records; with
--serializer protobuf, Protobuf messages) with confluent-kafka's own serializers and registry
client.

Why: calve must read what real producers write: magic byte 0x00, the 4-byte big-endian schema
id the registry assigned, then the Avro binary body, with the schema registered under the
subject the producer's strategy names. Hand-built bytes would only test our reading of our
own idea of the format; this uses `SchemaRegistryClient` + `AvroSerializer` (fastavro) as
shipped in confluent-kafka, against a registry (the fake one in registry.py, or a real one).

Usage:
    python produce_avro.py BROKERS TOPIC REGISTRY_URL [--subject-strategy topic|record|topic_record]
        [--auto-register true|false] [--use-latest] [--user U --password P] [--print-ids]

Input: one JSON object per stdin line, produced in order:
    {"schema": <Avro schema: JSON object/array/string, or the schema text as a string>,
     "key": "text" | null,          # a UTF-8 string key (StringSerializer), or no key
     "key_schema": <Avro schema>,   # optional: then "key" is an Avro value of this schema
     "value": {...} | null,         # the record (converted as below); null = tombstone
     "partition": 3,                # optional explicit partition
     "headers": {"h": "v"}}         # optional headers (string values)
    "schema" / "key_schema" may be left out to reuse the previous line's ("key_schema": null
    goes back to string keys). An Avro "schema" may name types other subjects define, listed
    in the line's "references": [{"name": "com.acme.Addr", "subject": "addr", "version": 1}]
    (registered beforehand; kept for the lines after, like "schema").

Conversions inside "value" and an Avro "key" (a JSON object with exactly one of these keys is
replaced; anything else is passed to fastavro as is):
    {"$decimal": "12.34"}            -> decimal.Decimal("12.34")  (bytes/fixed decimal)
    {"$bytes_b64": "AAE="}           -> bytes                     (bytes and fixed)
    {"$date": "2024-01-02"}          -> datetime.date             (date)
    {"$timestamp_us": 1700000000000000} -> aware UTC datetime     (timestamp-micros/-millis,
    {"$timestamp_ms": 1700000000000}    -> aware UTC datetime      either unit works for both)
    {"$local_timestamp_us": N}       -> naive datetime            (local-timestamp-*)
    {"$time_us": 3723000001}         -> datetime.time             (time-micros/-millis)
    {"$uuid": "…"}                   -> uuid.UUID                 (uuid)
    {"$float": "NaN" | "Infinity" | "-Infinity"} -> float
    {"$union": ["full.Name", value]} -> ("full.Name", value): picks that union branch
Plain JSON numbers, strings, booleans, arrays and objects need no conversion (an int given
for a timestamp-micros field is written as is).

With --serializer protobuf, "schema" is `.proto` text, compiled by protoc (grpcio-tools) into
the message classes ProtobufSerializer needs, and each line also names:
    "message": "shop.Order",        # the message of the file the value is (fully qualified)
    "proto_file": "shop/order.proto", # optional: the file's name (default "value.proto")
    "imports": {"common/address.proto": "<.proto text>"}  # optional: files it imports (other
                                    # than Google's), registered as references by the serializer
and "value" is the message in proto3 JSON (json_format.ParseDict: RFC 3339 Timestamps, enum
names, wrappers as plain values, 64-bit integers as numbers or strings). "message",
"proto_file" and "imports" may be left out to reuse the previous line's.

Output (stdout): with --print-ids, one JSON line per input line:
    {"value_schema_id": N | null, "key_schema_id": N | null}
(the ids in the framing of the bytes sent), then always the number of messages delivered.
Exits non-zero if serialisation or any delivery fails (the error on stderr).
"""
import argparse
import base64
import datetime
import decimal
import json
import struct
import sys
import uuid

from confluent_kafka import Producer
from confluent_kafka.schema_registry import (
    Schema,
    SchemaReference,
    SchemaRegistryClient,
    record_subject_name_strategy,
    topic_record_subject_name_strategy,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

STRATEGIES = {
    "topic": topic_subject_name_strategy,
    "record": record_subject_name_strategy,
    "topic_record": topic_record_subject_name_strategy,
}
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _time(us):
    us = int(us)
    return datetime.time(us // 3_600_000_000, us // 60_000_000 % 60, us // 1_000_000 % 60, us % 1_000_000)


CONVERSIONS = {
    "$decimal": lambda v: decimal.Decimal(str(v)),
    "$bytes_b64": base64.b64decode,
    "$date": datetime.date.fromisoformat,
    "$timestamp_us": lambda v: EPOCH + datetime.timedelta(microseconds=int(v)),
    "$timestamp_ms": lambda v: EPOCH + datetime.timedelta(milliseconds=int(v)),
    "$local_timestamp_us": lambda v: (EPOCH + datetime.timedelta(microseconds=int(v))).replace(tzinfo=None),
    "$time_us": _time,
    "$uuid": uuid.UUID,
    "$float": float,
    "$union": lambda v: (v[0], convert(v[1])),
}


def convert(v):
    """Replaces the `{"$…": …}` conventions (see the module docs) throughout `v`."""
    if isinstance(v, dict):
        if len(v) == 1:
            (k, inner), = v.items()
            if k in CONVERSIONS:
                return CONVERSIONS[k](inner)
        return {k: convert(x) for k, x in v.items()}
    if isinstance(v, list):
        return [convert(x) for x in v]
    return v


def schema_text(schema):
    """The schema as text: strings that are JSON documents pass as they are, others are dumped."""
    if isinstance(schema, str):
        try:
            json.loads(schema)
            return schema
        except ValueError:
            return json.dumps(schema)  # a bare type name such as "string"
    return json.dumps(schema)


class ProtoSerializer:
    """A ProtobufSerializer for one message of one `.proto` text, fed proto3 JSON values."""

    def __init__(self, text, proto, registry, conf):
        from google.protobuf import json_format  # noqa: F401 - fails early if protobuf is missing
        from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

        self.cls = message_class(text, proto)
        self.ser = ProtobufSerializer(self.cls, registry, conf={**conf, "use.deprecated.format": False})

    def __call__(self, value, ctx):
        from google.protobuf import json_format

        return self.ser(json_format.ParseDict(value, self.cls()), ctx)


def message_class(text, proto):
    """The class of message `proto["message"]` of `text`, compiled by protoc into a pool of its own
    (two versions of one file cannot share a pool)."""
    from google.protobuf import descriptor_pool, message_factory

    import protoc

    if not proto.get("message"):
        raise ValueError("a protobuf line needs \"message\"")
    files = dict(proto.get("imports") or {})
    files[proto["proto_file"]] = text
    fds = protoc.compile_files(files, proto["proto_file"], include_imports=True)
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:  # dependencies first, as protoc writes them
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(proto["message"]))


def framed_id(data):
    """The schema id in Confluent framing (0x00 + 4-byte big-endian id), or None."""
    if data is not None and len(data) >= 5 and data[0] == 0:
        return struct.unpack(">I", data[1:5])[0]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("brokers")
    ap.add_argument("topic")
    ap.add_argument("registry_url")
    ap.add_argument("--subject-strategy", choices=sorted(STRATEGIES), default="topic")
    ap.add_argument("--auto-register", choices=["true", "false"], default="true")
    ap.add_argument("--use-latest", action="store_true",
                    help="serialise with the subject's latest version (needs --auto-register false)")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--print-ids", action="store_true")
    ap.add_argument("--serializer", choices=["avro", "json", "protobuf"], default="avro",
                    help="json: values are JSON Schema records (JSONSerializer; `schema` is a JSON Schema); "
                         "protobuf: Protobuf messages (ProtobufSerializer; `schema` is .proto text)")
    args = ap.parse_args()

    sr_conf = {"url": args.registry_url}
    if args.user is not None:
        sr_conf["basic.auth.user.info"] = f"{args.user}:{args.password or ''}"
    registry = SchemaRegistryClient(sr_conf)
    ser_conf = {
        "auto.register.schemas": args.auto_register == "true",
        "use.latest.version": args.use_latest,
        # Explicit: 2.16's default (the ASSOCIATED strategy) first asks the registry for
        # subject associations (GET /associations/...) and fails on any non-404 answer.
        "subject.name.strategy": STRATEGIES[args.subject_strategy],
    }
    serializers = {}  # schema text -> AvroSerializer (one serializer holds one schema)

    def protobuf(schema, proto):
        key = json.dumps([schema, proto], sort_keys=True)
        if key not in serializers:
            serializers[key] = ProtoSerializer(schema, proto, registry, ser_conf)
        return serializers[key]

    def avro(schema, refs=None):
        if args.serializer == "protobuf":
            return protobuf(schema, proto)
        text = schema_text(schema)
        key = json.dumps([text, refs])
        if key not in serializers:
            if args.serializer == "json":
                serializers[key] = JSONSerializer(text, registry, conf=ser_conf)
            else:
                named = [SchemaReference(r["name"], r["subject"], r["version"]) for r in refs or []]
                given = Schema(text, "AVRO", named) if named else text
                serializers[key] = AvroSerializer(registry, given, conf=ser_conf)
        return serializers[key]

    strings = StringSerializer("utf_8")
    failures = []

    def on_delivery(err, msg):
        if err is not None:
            failures.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True, "linger.ms": 5})
    schema = key_schema = references = None
    proto = {"message": None, "proto_file": "value.proto", "imports": {}}
    n = 0
    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        schema = rec.get("schema", schema)
        key_schema = rec.get("key_schema", key_schema)
        references = rec.get("references", references)
        proto = {k: rec.get(k, v) for k, v in proto.items()}
        try:
            kctx = SerializationContext(args.topic, MessageField.KEY)
            key = rec.get("key")
            if key is not None:
                key = avro(key_schema)(convert(key), kctx) if key_schema is not None else strings(key, kctx)
            value = rec.get("value")
            if value is not None:
                if schema is None:
                    raise ValueError("no schema given yet")
                if args.serializer != "protobuf":
                    value = convert(value)
                value = avro(schema, references)(value, SerializationContext(args.topic, MessageField.VALUE))
        except Exception as e:  # noqa: BLE001 - report which line, then fail
            sys.exit(f"produce_avro.py: line {lineno}: {type(e).__name__}: {e}")
        kwargs = {"key": key, "value": value, "on_delivery": on_delivery}
        if rec.get("partition") is not None:
            kwargs["partition"] = int(rec["partition"])
        if rec.get("headers"):
            kwargs["headers"] = list(rec["headers"].items())
        while True:
            try:
                producer.produce(args.topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        n += 1
        if args.print_ids:
            ids = {"value_schema_id": framed_id(value),
                   "key_schema_id": framed_id(key) if key_schema is not None else None}
            print(json.dumps(ids), flush=True)
    remaining = producer.flush(60)
    if remaining or failures:
        sys.exit(f"produce_avro.py: {remaining} not delivered, {len(failures)} failed: {failures[:5]}")
    print(n - len(failures), flush=True)


if __name__ == "__main__":
    main()
