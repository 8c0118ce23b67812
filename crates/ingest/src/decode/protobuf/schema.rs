//! A Protobuf writer schema made ready to decode with: compiled into descriptors, and each
//! message's shape as Arrow sees it.
//!
//! Registries hand a Protobuf schema out as `.proto` text (Confluent's default answer) or as
//! a base64 serialized `FileDescriptorProto` (what confluent-kafka's clients register, and
//! `?format=serialized`); either is compiled by protox, with the schemas it references
//! (resolved by the registry client) and the imports producers leave out of their
//! references: Google's well-known types (`google/protobuf/…`), and of the `google/type/` and
//! `confluent/` files Confluent's serializers treat as built in, `google/type/date.proto`,
//! `google/type/timeofday.proto`, `confluent/type/decimal.proto` and `confluent/meta.proto`
//! (its `doc`, `params` and `tags`). A schema importing another of them does not compile,
//! which stops the table with the import named (calve's limit, not its records' fault).
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

/// A writer schema compiled.
pub struct Compiled {
    /// Its file.
    pub file: FileDescriptor,
    /// Whether its message indexes skip the map-entry types the compiler made for `map<K, V>`
    /// fields: they do when the registry holds `.proto` text written with `map<K, V>`, as
    /// Confluent's Java serializers and deserializers number the messages the text declares
    /// (a text that declares its entries — `option map_entry = true`, as the registry prints
    /// a schema registered as a descriptor — and a serialized descriptor count them, as the
    /// Python serializer always does).
    pub skip_map_entries: bool,
}

/// At most this many Arrow fields in one message's shape (nested ones counted): a schema
/// whose message types nest into each other many times over would grow without bound.
const MAX_FIELDS: usize = 10_000;

/// Compiles writer schema `w` (with its imports) into the descriptor of its file.
pub fn compile(w: &WriterSchema) -> Result<Compiled, String> {
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
    let pool = compiler.descriptor_pool();
    // prost-reflect takes map entries on trust (a declared `option map_entry = true` is not
    // checked) and panics on a malformed one; such a schema is refused here instead.
    for m in pool.all_messages().filter(MessageDescriptor::is_map_entry) {
        let key = m.get_field(1).map(|f| f.kind());
        let valid_key = matches!(
            key,
            Some(
                Kind::Int32
                    | Kind::Int64
                    | Kind::Uint32
                    | Kind::Uint64
                    | Kind::Sint32
                    | Kind::Sint64
                    | Kind::Fixed32
                    | Kind::Fixed64
                    | Kind::Sfixed32
                    | Kind::Sfixed64
                    | Kind::Bool
                    | Kind::String
            )
        );
        if !valid_key || m.get_field(2).is_none() || m.fields().len() != 2 {
            return Err(format!(
                "the Protobuf schema's map entry {} is not a key (an integer, bool or string, field 1) and a value (field 2)",
                m.full_name()
            ));
        }
    }
    let file = pool
        .get_file_by_name(&main)
        .ok_or_else(|| "the Protobuf schema compiled to nothing".to_string())?;
    Ok(Compiled {
        file,
        skip_map_entries: is_source(&w.text) && !w.text.contains("map_entry"),
    })
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
    if !is_source(trimmed) {
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trimmed) {
            if let Ok(mut file) = prost_types::FileDescriptorProto::decode(bytes.as_slice()) {
                file.name = Some(name.to_string());
                return Ok(File::from_file_descriptor_proto(file));
            }
        }
    }
    File::from_source(name, text)
}

/// Whether a schema text is `.proto` source rather than a base64 serialized descriptor.
fn is_source(text: &str) -> bool {
    text.trim().contains(|c: char| c.is_whitespace() || c == ';')
}

/// The members of message `m` that map to Arrow, and their Arrow fields.
/// `Err` when the shape would hold more than [`MAX_FIELDS`] fields.
pub fn message_shape(m: &MessageDescriptor) -> Result<(Vec<Member>, Fields), String> {
    let mut walk = Walk {
        stack: vec![m.full_name().to_string()],
        fields: 0,
    };
    let shape = members(m, &mut walk);
    match walk.fields > MAX_FIELDS {
        true => Err(format!(
            "message {} nests into more than {MAX_FIELDS} fields",
            m.full_name()
        )),
        false => Ok(shape),
    }
}

/// Where a shape is being worked out: the messages it is inside, and the fields so far.
struct Walk {
    stack: Vec<String>,
    fields: usize,
}

fn members(m: &MessageDescriptor, walk: &mut Walk) -> (Vec<Member>, Fields) {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    for fd in m.fields() {
        walk.fields += 1;
        if walk.fields > MAX_FIELDS {
            break;
        }
        let Some((shape, dt)) = field_shape(&fd, walk) else {
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

fn field_shape(fd: &FieldDescriptor, walk: &mut Walk) -> Option<(Shape, DataType)> {
    if fd.is_map() {
        let Kind::Message(entry) = fd.kind() else { return None };
        let (k, kt) = kind_shape(&entry.get_field(1)?.kind(), walk)?;
        let (v, vt) = kind_shape(&entry.get_field(2)?.kind(), walk)?;
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
    let (shape, dt) = kind_shape(&fd.kind(), walk)?;
    if fd.is_list() {
        return Some((
            Shape::List(Box::new(shape)),
            DataType::List(Field::new("element", dt, true).into()),
        ));
    }
    Some((shape, dt))
}

fn kind_shape(kind: &Kind, walk: &mut Walk) -> Option<(Shape, DataType)> {
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
        Kind::Message(m) => return message_kind(m, walk),
    })
}

fn message_kind(m: &MessageDescriptor, walk: &mut Walk) -> Option<(Shape, DataType)> {
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
            let (inner, dt) = kind_shape(&m.get_field(1)?.kind(), walk)?;
            (Shape::Wrapper(Box::new(inner)), dt)
        }
        "google.protobuf.Struct" | "google.protobuf.Value" | "google.protobuf.ListValue" => {
            (Shape::Json, DataType::Utf8)
        }
        _ if walk.stack.iter().any(|s| s == name) => (Shape::Json, DataType::Utf8),
        _ => {
            walk.stack.push(name.to_string());
            let (members, fields) = members(m, walk);
            walk.stack.pop();
            if fields.is_empty() {
                return None;
            }
            (Shape::Message(members), DataType::Struct(fields))
        }
    })
}
