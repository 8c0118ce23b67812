"""Compiles `.proto` text with protoc (grpcio-tools' `grpc_tools.protoc`), for the test kit's
Protobuf producer (produce_avro.py) and fake registry (registry.py).

Imports may be `.proto` text or base64 serialized FileDescriptorProtos (what confluent-kafka's
serializers register); Google's well-known types come with protoc, and the `google/type` files
Confluent's serializers treat as built in come from googleapis-common-protos, as the real
registry knows them without references.
"""
import base64
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2


def is_text(schema):
    """Whether a Protobuf schema is `.proto` text (base64 holds no blank and no `;`)."""
    return any(c.isspace() or c == ";" for c in schema.strip())


def _built_in():
    out = []
    try:
        from google.type import date_pb2, timeofday_pb2
    except ImportError:
        return out
    for module in (date_pb2, timeofday_pb2):
        f = descriptor_pb2.FileDescriptorProto()
        f.ParseFromString(module.DESCRIPTOR.serialized_pb)
        out.append(f)
    return out


def compile_files(files, main, include_imports=False):
    """The FileDescriptorSet protoc makes of `main` (with its imports first when
    `include_imports`); `files` maps import names to `.proto` text or base64 descriptors.
    Raises ValueError with protoc's message when it does not compile."""
    with tempfile.TemporaryDirectory() as d:
        given = descriptor_pb2.FileDescriptorSet()
        for f in _built_in():
            if f.name not in files:
                given.file.add().CopyFrom(f)
        for name, text in files.items():
            if not is_text(text):
                f = given.file.add()
                f.ParseFromString(base64.standard_b64decode(text))
                f.name = name
                continue
            path = os.path.join(d, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        with open(os.path.join(d, "given.pb"), "wb") as f:
            f.write(given.SerializeToString())
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{d}", f"--descriptor_set_in={d}/given.pb",
               f"--descriptor_set_out={d}/out.pb", main]
        if include_imports:
            cmd.insert(3, "--include_imports")
        res = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
        if res.returncode != 0:
            raise ValueError(f"protoc: {res.stderr.strip()}")
        fds = descriptor_pb2.FileDescriptorSet()
        with open(os.path.join(d, "out.pb"), "rb") as f:
            fds.ParseFromString(f.read())
    return fds
