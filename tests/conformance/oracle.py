#!/usr/bin/env python3
"""Differential oracle for triton-deploy's config.pbtxt parser.

Parses each file with NVIDIA's published `inference.ModelConfig` schema (the `model_config_pb2` module that
ships in the `tritonclient` package) and Google's `protobuf` text-format parser, and prints one JSON line
per file: {"file", "ok", "json" | "error"}. `--schema` prints the schema as
`message field=number:type[]/oneof` lines instead, to compare with ours.
"""
import importlib.util
import json
import os
import sys

import tritonclient
from google.protobuf import json_format, text_format


def load_schema():
    path = os.path.join(os.path.dirname(tritonclient.__file__), "grpc", "model_config_pb2.py")
    spec = importlib.util.spec_from_file_location("model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def type_name(f):
    if f.message_type is not None:
        return f.message_type.full_name
    if f.enum_type is not None:
        return f.enum_type.full_name
    return {1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 8: "bool", 9: "string",
            12: "bytes", 13: "uint32"}.get(f.type, str(f.type))


def dump_schema(desc, seen, out):
    if desc.full_name in seen:
        return
    seen.add(desc.full_name)
    fields = []
    for f in sorted(desc.fields, key=lambda f: f.number):
        oneof = f.containing_oneof.name if f.containing_oneof is not None else ""
        rep = "[]" if f.is_repeated else ""
        fields.append(f"{f.name}={f.number}:{type_name(f)}{rep}{'/' + oneof if oneof else ''}")
    out.append(f"{desc.full_name} " + " ".join(fields))
    for f in desc.fields:
        if f.message_type is not None:
            dump_schema(f.message_type, seen, out)
        if f.enum_type is not None and f.enum_type.full_name not in seen:
            seen.add(f.enum_type.full_name)
            values = " ".join(f"{v.name}={v.number}" for v in f.enum_type.values)
            out.append(f"{f.enum_type.full_name} {values}")


def main():
    schema = load_schema()
    if sys.argv[1:2] == ["--schema"]:
        out = []
        dump_schema(schema.ModelConfig.DESCRIPTOR, set(), out)
        print("\n".join(sorted(out)))
        return
    for path in sys.argv[1:]:
        with open(path, "rb") as fh:
            raw = fh.read()
        cfg = schema.ModelConfig()
        try:
            text_format.Parse(raw.decode("utf-8"), cfg)
            doc = json.loads(json_format.MessageToJson(cfg, preserving_proto_field_name=True))
            print(json.dumps({"file": path, "ok": True, "json": doc}))
        except Exception as exc:  # any parse failure is a rejection
            print(json.dumps({"file": path, "ok": False, "error": str(exc)}))


if __name__ == "__main__":
    main()
