//! A Protobuf writer schema made ready to decode with: compiled into descriptors, and each
//! message's shape as Arrow sees it.
//!
//! Registries hand a Protobuf schema out as `.proto` text (Confluent's default answer) or as
//! a base64 serialized `FileDescriptorProto` (what confluent-kafka's clients register, and
//! `?format=serialized`); either is compiled by protox, with the schemas it references
//! (resolved by the registry client) and the imports every producer may leave out of its
//! references: Google's well-known types and the `google/type` and `confluent/` files that
//! Confluent's serializers treat as built in.
//!
//! How Protobuf maps to Arrow (and so to Iceberg), as the README's table says:
//! `int32`/`sint32`/`sfixed32` → int; `int64`/`sint64`/`sfixed64`/`uint32`/`fixed32` → long;
//! `uint64`/`fixed64` → long, a value beyond it failing its record; enums → their value's
//! name (a number the writer's enum lacks, as its digits); `google.protobuf.Timestamp` →
//! timestamptz (microseconds); the wrappers (`Int64Value`, …) → their value, null when unset;
//! `google.type.Date` → date; `google.type.TimeOfDay` → time; `google.protobuf.Struct`,
//! `Value`, `ListValue` and recursive messages → their proto3 JSON text; a message with no
//! field (`google.protobuf.Empty`) → nothing; other messages → structs; `repeated` → lists;
//! `map` → maps. A `oneof`'s fields are columns of their own, the one set non-null.

use std::collections::HashMap;

use arrow_schema::{DataType, Field, Fields, TimeUnit};
use base64::Engine;
use prost::Message as _;
use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use protox::file::{File, FileResolver, GoogleFileResolver};

use crate::registry::WriterSchema;

/// Files Confluent's serializers never register as references (`google/type/…`,
/// `confluent/…`): their well-known content, so schemas importing them compile.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "google/type/date.proto",
        "syntax = \"proto3\"; package google.type; message Date { int32 year = 1; int32 month = 2; int32 day = 3; }",
    ),
    (
        "google/type/timeofday.proto",
        "syntax = \"proto3\"; package google.type; message TimeOfDay { int32 hours = 1; int32 minutes = 2; int32 seconds = 3; int32 nanos = 4; }",
    ),
    (
        "confluent/type/decimal.proto",
        "syntax = \"proto3\"; package confluent.type; message Decimal { bytes value = 1; uint32 precision = 2; int32 scale = 3; }",
    ),
    (
        "confluent/meta.proto",
        "syntax = \"proto3\"; package confluent; import \"google/protobuf/descriptor.proto\"; \
         message Meta { string doc = 1; map<string, string> params = 2; repeated string tags = 3; } \
         extend google.protobuf.FileOptions { Meta file_meta = 1088; } \
         extend google.protobuf.MessageOptions { Meta message_meta = 1088; } \
         extend google.protobuf.FieldOptions { Meta field_meta = 1088; } \
         extend google.protobuf.EnumOptions { Meta enum_meta = 1088; } \
         extend google.protobuf.EnumValueOptions { Meta enum_value_meta = 1088; }",
    ),
];

/// How a Protobuf value becomes an Arrow value.
#[derive(Debug, Clone)]
pub enum Shape {
    Bool,
    I32,
    I64,
    /// `uint32`/`fixed32`, into a long.
    U32,
    /// `uint64`/`fixed64`, into a long when it fits.
    U64,
    F32,
    F64,
    Str,
    Bytes,
    Enum(EnumDescriptor),
    Timestamp,
    Date,
    TimeOfDay,
    /// A wrapper message: its `value` field, null when the wrapper is unset.
    Wrapper(Box<Shape>),
    /// A message kept as its proto3 JSON text.
    Json,
    Message(Vec<Member>),
    List(Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
}

/// A field of a message and how it maps.
#[derive(Debug, Clone)]
pub struct Member {
    pub field: FieldDescriptor,
    pub shape: Shape,
    /// The field tracks presence (a message, `optional`, a `oneof` member, proto2): unset
    /// reads null. Fields without it read their default when unset, as Protobuf defines.
    pub presence: bool,
}

/// Compiles writer schema `w` (with its imports) into the descriptor of its file.
pub fn compile(w: &WriterSchema) -> Result<FileDescriptor, String> {
    let main = format!("calve-writer-schema-{}.proto", w.id);
    let mut files: HashMap<String, String> = w.imports.iter().map(|i| (i.name.clone(), i.text.clone())).collect();
    files.insert(main.clone(), w.text.clone());
    let mut compiler = protox::Compiler::with_file_resolver(Sources {
        files,
        google: GoogleFileResolver::new(),
    });
    compiler
        .open_file(&main)
        .map_err(|e| format!("the Protobuf schema does not compile: {e}"))?;
    compiler
        .descriptor_pool()
        .get_file_by_name(&main)
        .ok_or_else(|| "the Protobuf schema compiled to nothing".to_string())
}

/// The schema texts a writer schema may import, by import path.
struct Sources {
    files: HashMap<String, String>,
    google: GoogleFileResolver,
}

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if let Some(text) = self.files.get(name) {
            return parse(name, text);
        }
        if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name) {
            return File::from_source(name, text);
        }
        self.google.open_file(name)
    }
}

/// A schema text: `.proto` source, or a base64 serialized `FileDescriptorProto` (which holds
/// no blank and no `;`, which any source has).
fn parse(name: &str, text: &str) -> Result<File, protox::Error> {
    let trimmed = text.trim();
    let serialized = !trimmed.contains(|c: char| c.is_whitespace() || c == ';');
    if serialized {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trimmed) {
            if let Ok(mut file) = prost_types::FileDescriptorProto::decode(bytes.as_slice()) {
                file.name = Some(name.to_string());
                return Ok(File::from_file_descriptor_proto(file));
            }
        }
    }
    File::from_source(name, text)
}

/// The members of message `m` that map to Arrow, and their Arrow fields.
pub fn message_shape(m: &MessageDescriptor) -> (Vec<Member>, Fields) {
    members(m, &mut vec![m.full_name().to_string()])
}

fn members(m: &MessageDescriptor, stack: &mut Vec<String>) -> (Vec<Member>, Fields) {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    for fd in m.fields() {
        let Some((shape, dt)) = field_shape(&fd, stack) else {
            continue;
        };
        // Every writer field is nullable in Arrow: a field of an unset message is null
        // whether or not the field itself tracks presence.
        fields.push(Field::new(fd.name(), dt, true));
        out.push(Member {
            presence: fd.supports_presence(),
            field: fd,
            shape,
        });
    }
    (out, fields.into())
}

fn field_shape(fd: &FieldDescriptor, stack: &mut Vec<String>) -> Option<(Shape, DataType)> {
    if fd.is_map() {
        let Kind::Message(entry) = fd.kind() else { return None };
        let (k, kt) = kind_shape(&entry.map_entry_key_field().kind(), stack)?;
        let (v, vt) = kind_shape(&entry.map_entry_value_field().kind(), stack)?;
        let entries = Field::new(
            "entries",
            DataType::Struct(vec![Field::new("key", kt, false), Field::new("value", vt, true)].into()),
            false,
        );
        return Some((
            Shape::Map(Box::new(k), Box::new(v)),
            DataType::Map(entries.into(), false),
        ));
    }
    let (shape, dt) = kind_shape(&fd.kind(), stack)?;
    if fd.is_list() {
        return Some((
            Shape::List(Box::new(shape)),
            DataType::List(Field::new("element", dt, true).into()),
        ));
    }
    Some((shape, dt))
}

fn kind_shape(kind: &Kind, stack: &mut Vec<String>) -> Option<(Shape, DataType)> {
    Some(match kind {
        Kind::Bool => (Shape::Bool, DataType::Boolean),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => (Shape::I32, DataType::Int32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => (Shape::I64, DataType::Int64),
        Kind::Uint32 | Kind::Fixed32 => (Shape::U32, DataType::Int64),
        Kind::Uint64 | Kind::Fixed64 => (Shape::U64, DataType::Int64),
        Kind::Float => (Shape::F32, DataType::Float32),
        Kind::Double => (Shape::F64, DataType::Float64),
        Kind::String => (Shape::Str, DataType::Utf8),
        Kind::Bytes => (Shape::Bytes, DataType::Binary),
        Kind::Enum(e) => (Shape::Enum(e.clone()), DataType::Utf8),
        Kind::Message(m) => return message_kind(m, stack),
    })
}

fn message_kind(m: &MessageDescriptor, stack: &mut Vec<String>) -> Option<(Shape, DataType)> {
    let name = m.full_name();
    Some(match name {
        "google.protobuf.Timestamp" => (
            Shape::Timestamp,
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        ),
        "google.type.Date" => (Shape::Date, DataType::Date32),
        "google.type.TimeOfDay" => (Shape::TimeOfDay, DataType::Time64(TimeUnit::Microsecond)),
        "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.BoolValue"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue" => {
            let (inner, dt) = kind_shape(&m.get_field(1)?.kind(), stack)?;
            (Shape::Wrapper(Box::new(inner)), dt)
        }
        "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue" => {
            (Shape::Json, DataType::Utf8)
        }
        _ if stack.iter().any(|s| s == name) => (Shape::Json, DataType::Utf8),
        _ => {
            stack.push(name.to_string());
            let (members, fields) = members(m, stack);
            stack.pop();
            if fields.is_empty() {
                return None;
            }
            (Shape::Message(members), DataType::Struct(fields))
        }
    })
}
