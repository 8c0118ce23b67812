//! Schema update: the changes calve can make without rewriting data, with field ids assigned
//! as the spec requires (new columns get fresh ids; renames and widenings keep theirs, so old
//! files keep reading correctly).

use iceberg::spec::{NestedField, PrimitiveType, Schema, StructType, TableMetadata, TableMetadataBuilder, Type};

use calve_contract::{ColumnType, ResolvedColumn};

use super::MetadataUpdate;
use crate::catalog::schema::{column_type_of, iceberg_type};
use crate::error::{Result, TableError};

/// One change to a top-level column.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaChange {
    /// A new optional column.
    AddColumn {
        /// Name.
        name: String,
        /// Type.
        ty: PrimitiveType,
        /// Doc.
        doc: Option<String>,
    },
    /// A new optional column of any contract type, nested ones included (its nested fields
    /// get fresh ids after the column's own).
    AddTyped {
        /// Name.
        name: String,
        /// Type.
        ty: ColumnType,
        /// Doc.
        doc: Option<String>,
    },
    /// A new optional field of a struct column (or of a struct nested in structs), at
    /// `parent` (the column, then the struct fields down to the struct that gets it).
    AddNested {
        /// Path of the struct that gets the field.
        parent: Vec<String>,
        /// Name.
        name: String,
        /// Type.
        ty: ColumnType,
        /// Doc.
        doc: Option<String>,
    },
    /// int→long, float→double, decimal(P,S)→decimal(P',S) with P' ≥ P.
    Widen {
        /// Column.
        name: String,
        /// New type.
        to: PrimitiveType,
    },
    /// required → optional (never for key columns).
    MakeOptional {
        /// Column.
        name: String,
    },
    /// Rename, keeping the field id (a breaking change for readers by name: approval path).
    Rename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// Delete a column from the schema (refused for a key; the contract diff never proposes a
    /// partition or sort source; its field id is never reused, so old files read right): approval path.
    Drop {
        /// Column.
        name: String,
    },
}

/// Applies `changes` in order and makes the result the current schema.
#[derive(Debug, Clone)]
pub struct UpdateSchema {
    /// The changes.
    pub changes: Vec<SchemaChange>,
}

impl MetadataUpdate for UpdateSchema {
    fn apply(&self, base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder> {
        let current = base.current_schema();
        let mut fields: Vec<NestedField> = current
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let keys: Vec<i32> = current.identifier_field_ids().collect();
        let mut next_id = base.last_column_id();
        for change in &self.changes {
            apply_change(&mut fields, &keys, &mut next_id, change).map_err(|reason| TableError::InvalidData {
                table: base.location().to_string(),
                reason: format!("{change:?}: {reason}"),
            })?;
        }
        let schema = Schema::builder()
            .with_fields(fields.into_iter().map(Into::into))
            .with_identifier_field_ids(keys)
            .build()?;
        Ok(builder.add_current_schema(schema)?)
    }
}

fn apply_change(
    fields: &mut Vec<NestedField>,
    keys: &[i32],
    next_id: &mut i32,
    change: &SchemaChange,
) -> std::result::Result<(), String> {
    let find = |fields: &mut Vec<NestedField>, name: &str| {
        fields
            .iter()
            .position(|f| f.name == name)
            .ok_or_else(|| format!("no column `{name}`"))
    };
    match change {
        SchemaChange::AddColumn { name, ty, doc } => {
            // Names differing only in case break engines that fold case (DuckDB, Spark).
            if fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
                return Err(format!("column `{name}` exists (ignoring case)"));
            }
            *next_id += 1;
            let f = NestedField::optional(*next_id, name, Type::Primitive(ty.clone()));
            fields.push(match doc {
                Some(d) => f.with_doc(d.clone()),
                None => f,
            });
        }
        SchemaChange::AddTyped { name, ty, doc } => {
            // Names differing only in case break engines that fold case (DuckDB, Spark).
            if fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
                return Err(format!("column `{name}` exists (ignoring case)"));
            }
            *next_id += 1;
            let id = *next_id;
            let f = NestedField::optional(id, name, iceberg_type(ty, next_id));
            fields.push(match doc {
                Some(d) => f.with_doc(d.clone()),
                None => f,
            });
        }
        SchemaChange::AddNested { parent, name, ty, doc } => {
            let (column, rest) = parent.split_first().ok_or("no parent struct")?;
            let i = find(fields, column)?;
            *next_id += 1;
            let id = *next_id;
            let f = NestedField::optional(id, name, iceberg_type(ty, next_id));
            let f = match doc {
                Some(d) => f.with_doc(d.clone()),
                None => f,
            };
            let ty = add_nested(&fields[i].field_type, rest, f)?;
            *fields[i].field_type = ty;
        }
        SchemaChange::Widen { name, to } => {
            let i = find(fields, name)?;
            let Type::Primitive(from) = &*fields[i].field_type else {
                return Err("not a primitive column".into());
            };
            if !is_widening(from, to) {
                return Err(format!("{from} → {to} is not a widening"));
            }
            *fields[i].field_type = Type::Primitive(to.clone());
        }
        SchemaChange::MakeOptional { name } => {
            let i = find(fields, name)?;
            if keys.contains(&fields[i].id) {
                return Err("key columns stay required".into());
            }
            fields[i].required = false;
        }
        SchemaChange::Rename { from, to } => {
            if fields.iter().any(|f| &f.name == to) {
                return Err(format!("column `{to}` exists"));
            }
            let i = find(fields, from)?;
            fields[i].name = to.clone();
        }
        SchemaChange::Drop { name } => {
            let i = find(fields, name)?;
            if keys.contains(&fields[i].id) {
                return Err("key columns cannot be dropped".into());
            }
            fields.remove(i);
        }
    }
    Ok(())
}

/// `ty` (a struct) with `field` added to the struct at `path` below it.
fn add_nested(ty: &Type, path: &[String], field: NestedField) -> std::result::Result<Type, String> {
    let Type::Struct(st) = ty else {
        return Err("the parent is not a struct".into());
    };
    let mut fields: Vec<NestedField> = st.fields().iter().map(|f| f.as_ref().clone()).collect();
    match path.split_first() {
        None => {
            if fields.iter().any(|f| f.name.eq_ignore_ascii_case(&field.name)) {
                return Err(format!("field `{}` exists (ignoring case)", field.name));
            }
            fields.push(field);
        }
        Some((next, rest)) => {
            let f = fields
                .iter_mut()
                .find(|f| &f.name == next)
                .ok_or_else(|| format!("no field `{next}`"))?;
            *f.field_type = add_nested(&f.field_type, rest, field)?;
        }
    }
    Ok(Type::Struct(StructType::new(
        fields.into_iter().map(Into::into).collect(),
    )))
}

/// Whether a value of contract type `declared` always fits `table`, a type the table got
/// from it by changes that keep old data readable: the same type, a primitive widening, or
/// a struct whose declared fields are all there (looser or equal) and whose other fields
/// are optional (added from events or by an approval), down lists and maps.
pub fn is_looser(declared: &ColumnType, table: &ColumnType) -> bool {
    if declared == table {
        return true;
    }
    match (declared, table) {
        // Nested nullability must agree: calve enforces `required` on new records only for
        // top-level columns, so a nested field the contract requires must be required in the
        // table too.
        (ColumnType::Struct(d), ColumnType::Struct(t)) => {
            d.iter().all(|df| {
                t.iter()
                    .any(|tf| tf.name == df.name && is_looser(&df.ty, &tf.ty) && df.required == tf.required)
            }) && t.iter().all(|tf| !tf.required || d.iter().any(|df| df.name == tf.name))
        }
        (ColumnType::List(d), ColumnType::List(t)) => is_looser(&d.ty, &t.ty) && d.required == t.required,
        (ColumnType::Map { key: dk, value: dv }, ColumnType::Map { key: tk, value: tv }) => {
            dk == tk && is_looser(&dv.ty, &tv.ty) && dv.required == tv.required
        }
        _ => match (iceberg_type(declared, &mut 0), iceberg_type(table, &mut 0)) {
            (Type::Primitive(d), Type::Primitive(t)) => is_widening(&d, &t),
            _ => false,
        },
    }
}

/// The new optional struct fields (at any struct depth) that make `table` into `declared`,
/// when that is the only difference: a contract that adds a nested field, additively.
fn nested_additions(table: &ColumnType, declared: &ColumnType, path: &[String]) -> Option<Vec<SchemaChange>> {
    if table == declared {
        return Some(Vec::new());
    }
    let (ColumnType::Struct(t), ColumnType::Struct(d)) = (table, declared) else {
        return None;
    };
    if !t.iter().all(|tf| d.iter().any(|df| df.name == tf.name)) {
        return None;
    }
    let mut out = Vec::new();
    for df in d {
        match t.iter().find(|tf| tf.name == df.name) {
            Some(tf) if tf.required == df.required => {
                let mut below = path.to_vec();
                below.push(df.name.clone());
                out.extend(nested_additions(&tf.ty, &df.ty, &below)?);
            }
            Some(_) => return None,
            None if df.required => return None,
            None => out.push(SchemaChange::AddNested {
                parent: path.to_vec(),
                name: df.name.clone(),
                ty: df.ty.clone(),
                doc: None,
            }),
        }
    }
    Some(out)
}

/// Whether `table` (a column's Iceberg type) is looser than the contract's `declared` type in
/// ways calve made on its own: [`is_looser`], with every nested field the contract does not
/// declare one calve added from events ([`ADDED_FROM_EVENTS`]) — a nested field the contract
/// dropped is a breaking change, not a looser table.
pub fn table_is_looser(declared: &ColumnType, table: &Type) -> bool {
    column_type_of(table).is_some_and(|t| is_looser(declared, &t)) && extra_fields_added(declared, table)
}

fn extra_fields_added(declared: &ColumnType, table: &Type) -> bool {
    match (declared, table) {
        (ColumnType::Struct(d), Type::Struct(t)) => {
            t.fields()
                .iter()
                .all(|tf| match d.iter().find(|df| df.name == tf.name) {
                    Some(df) => extra_fields_added(&df.ty, &tf.field_type),
                    None => tf.doc.as_deref() == Some(ADDED_FROM_EVENTS),
                })
        }
        (ColumnType::List(d), Type::List(l)) => extra_fields_added(&d.ty, &l.element_field.field_type),
        (ColumnType::Map { value, .. }, Type::Map(m)) => extra_fields_added(&value.ty, &m.value_field.field_type),
        _ => true,
    }
}

/// The type promotions the Iceberg spec allows.
pub fn is_widening(from: &PrimitiveType, to: &PrimitiveType) -> bool {
    use PrimitiveType::*;
    match (from, to) {
        (Int, Long) | (Float, Double) => true,
        (
            Decimal {
                precision: p1,
                scale: s1,
            },
            Decimal {
                precision: p2,
                scale: s2,
            },
        ) => s1 == s2 && p2 >= p1,
        (a, b) => a == b,
    }
}

/// How a table's schema differs from what its contract now declares: the changes that apply
/// without a person (a new column, a widening, required → optional) and, in words, the ones
/// that need one (a dropped, renamed or narrowed column, optional → required, a change inside
/// a nested type, a new required column old rows cannot have).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ContractDiff {
    /// Additive changes, in contract order.
    pub additive: Vec<SchemaChange>,
    /// Breaking changes, each said in words.
    pub breaking: Vec<String>,
    /// The changes that make the breaking ones, when every one has a change the approver can
    /// approve (a declared rename, a dropped column, a new required column added optional
    /// and enforced on new records); `None` when one has none (a narrowed type, a change
    /// inside a nested type), so only restoring the contract resumes the table.
    pub fixes: Option<Vec<SchemaChange>>,
    /// Where the table is looser than the contract (a type an approver widened, a required
    /// column the table lets be null): nothing to change, but the contract could say so.
    pub looser: Vec<String>,
}

/// The doc of a column calve added because the topic's events carried it: how a column the
/// contract never listed is told from one the contract dropped or renamed.
pub const ADDED_FROM_EVENTS: &str = "added by calve: the topic's events carried this field";

/// Compares `table` with the contract's `columns` by name. Columns calve added from events
/// ([`ADDED_FROM_EVENTS`], on its own under `evolution = "additive"` or by an approval) are
/// the table's own; any other column only the table has is one the contract dropped or
/// renamed.
///
/// `renames` are the contract's declared renames (old name, new name): a table column of the
/// old name, when the table has none of the new name, is renamed (approval path), and its
/// type and nullability compared with the renamed contract column.
///
/// A column that is a key, or the source of a partition field or sort order of `meta`, is
/// never proposed for dropping: Iceberg refuses it, so only restoring the contract helps.
pub fn diff_with_contract(
    meta: &TableMetadata,
    columns: &[ResolvedColumn],
    renames: &[(String, String)],
) -> ContractDiff {
    let table = meta.current_schema();
    let mut diff = ContractDiff::default();
    let mut fixes = Some(Vec::new());
    let fields = table.as_struct().fields();
    let has = |name: &str| fields.iter().any(|f| f.name == name);
    let protected: Vec<i32> = table
        .identifier_field_ids()
        .chain(
            meta.partition_specs_iter()
                .flat_map(|s| s.fields().iter().map(|f| f.source_id)),
        )
        .chain(
            meta.sort_orders_iter()
                .flat_map(|o| o.fields.iter().map(|f| f.source_id)),
        )
        .collect();
    for (from, to) in renames.iter().filter(|(from, to)| has(from) && has(to)) {
        diff.breaking.push(format!(
            "`{to}` is declared renamed from `{from}`, but the table has both (calve may have added `{to}` from \
             events): restore `{from}` in the contract, or drop `renamed_from` to drop `{from}`"
        ));
        fixes = None;
    }
    // Renames the table has not had yet.
    let renaming: Vec<&(String, String)> = renames.iter().filter(|(from, to)| has(from) && !has(to)).collect();
    for (from, to) in &renaming {
        diff.breaking.push(format!(
            "column `{from}` is renamed to `{to}` (readers that use `{from}` must change)"
        ));
        fix(
            &mut fixes,
            SchemaChange::Rename {
                from: from.clone(),
                to: to.clone(),
            },
        );
    }
    for f in fields {
        let added = f.doc.as_deref() == Some(ADDED_FROM_EVENTS);
        let renamed = renaming.iter().any(|(from, _)| from == &f.name);
        if !added && !renamed && !columns.iter().any(|c| c.name == f.name) {
            if protected.contains(&f.id) {
                diff.breaking.push(format!(
                    "column `{}` is in the table but not in the contract, and the table is keyed, partitioned \
                     or sorted on it, so it cannot be dropped: restore it in the contract",
                    f.name
                ));
                fixes = None;
                continue;
            }
            diff.breaking.push(format!(
                "column `{}` is in the table but not in the contract: approving drops it from the table \
                 (readers that use it must change); to rename it, declare `renamed_from` on its new name",
                f.name
            ));
            fix(&mut fixes, SchemaChange::Drop { name: f.name.clone() });
        }
    }
    for c in columns {
        let source = renaming
            .iter()
            .find(|(_, to)| to == &c.name)
            .map_or(c.name.as_str(), |(from, _)| from);
        let Some(f) = fields.iter().find(|f| f.name == source) else {
            let add = SchemaChange::AddTyped {
                name: c.name.clone(),
                ty: c.ty.clone(),
                doc: c.doc.clone(),
            };
            match c.required {
                // Iceberg adds a column to rows that exist as optional; calve enforces the
                // contract's `required` on new records.
                true => {
                    diff.breaking.push(format!(
                        "new column `{}` is required, but the rows already in the table do not have it: \
                         approving adds it as optional in the table, required of new records",
                        c.name
                    ));
                    fix(&mut fixes, add);
                }
                false => diff.additive.push(add),
            }
            continue;
        };
        match column_type_of(&f.field_type) {
            Some(t) if t == c.ty => {}
            Some(t) => match (&*f.field_type, iceberg_type(&c.ty, &mut 0)) {
                (Type::Primitive(from), Type::Primitive(to)) if is_widening(from, &to) => {
                    diff.additive.push(SchemaChange::Widen {
                        name: c.name.clone(),
                        to,
                    })
                }
                _ if table_is_looser(&c.ty, &f.field_type) => diff
                    .looser
                    .push(format!("`{}` is {t} in the table, {} in the contract", c.name, c.ty)),
                _ => match nested_additions(&t, &c.ty, std::slice::from_ref(&f.name)) {
                    Some(added) => diff.additive.extend(added),
                    None => {
                        diff.breaking
                            .push(format!("column `{}` changes type from {t} to {}", c.name, c.ty));
                        fixes = None;
                    }
                },
            },
            None => {
                diff.breaking
                    .push(format!("column `{}` has a type a contract cannot declare", c.name));
                fixes = None;
            }
        }
        match (f.required, c.required) {
            (true, false) => diff.additive.push(SchemaChange::MakeOptional { name: c.name.clone() }),
            // Iceberg cannot make a column with rows required; calve enforces it on new
            // records instead (unless an approver let them lack it).
            (false, true) => diff.looser.push(format!(
                "`{}` is optional in the table (rows in it may lack it), required in the contract",
                c.name
            )),
            _ => {}
        }
    }
    diff.fixes = fixes.filter(|_| !diff.breaking.is_empty());
    diff
}

fn fix(fixes: &mut Option<Vec<SchemaChange>>, change: SchemaChange) {
    if let Some(f) = fixes {
        f.push(change);
    }
}
