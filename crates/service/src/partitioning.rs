//! Whether a table is partitioned the way its contract says. A table's partitioning is fixed
//! when calve creates it, and a contract edit that would change it (another event-time grain,
//! `late_data.policy` to or from `current-partition`) cannot be applied by a commit the way a
//! schema change is: writing on would put rows where readers do not expect them. So the
//! difference is named, by `calve check` and at open, instead of being ignored.

use iceberg::spec::{Schema, TableMetadata, Transform};

use calve_table::TableDefinition;

use crate::error::ServiceError;

/// `transform(column)` of each field, in spec order; a column renamed by `renames` (old, new)
/// under its new name.
fn describe(
    schema: &Schema,
    fields: impl Iterator<Item = (i32, Transform)>,
    renames: &[(String, String)],
) -> Vec<String> {
    fields
        .map(|(id, t)| {
            let name = schema
                .field_by_id(id)
                .map_or_else(|| format!("field {id}"), |f| f.name.clone());
            let column = renames
                .iter()
                .find(|(old, _)| *old == name)
                .map_or(name.clone(), |(_, new)| new.clone());
            format!("{}({column})", format!("{t}").to_ascii_lowercase())
        })
        .collect()
}

/// How the table (`meta`) and its definition (`def`, from the contract, whose `renames` may
/// still wait for approval) partition rows, when they differ: (the table's, the contract's).
pub fn partitioning_differs(
    def: &TableDefinition,
    meta: &TableMetadata,
    renames: &[(String, String)],
) -> Option<(String, String)> {
    let wanted = describe(
        &def.schema,
        def.partition_spec.fields().iter().map(|f| (f.source_id, f.transform)),
        &[],
    );
    let has = describe(
        meta.current_schema(),
        meta.default_partition_spec()
            .fields()
            .iter()
            .map(|f| (f.source_id, f.transform)),
        renames,
    );
    let words = |v: Vec<String>| match v.is_empty() {
        true => "nothing (unpartitioned)".to_string(),
        false => v.join(", "),
    };
    (wanted != has).then(|| (words(has), words(wanted)))
}

/// Refuses a table partitioned otherwise than its contract says.
pub fn check_partitioning(
    def: &TableDefinition,
    meta: &TableMetadata,
    renames: &[(String, String)],
) -> Result<(), ServiceError> {
    match partitioning_differs(def, meta, renames) {
        None => Ok(()),
        Some((has, wanted)) => Err(ServiceError::Config(format!(
            "table {} is partitioned by {has}, its contract asks for {wanted} (event_time.partition, \
             late_data.policy): a table's partitioning is fixed when it is created; restore the contract, \
             or give the new partitioning a new table name",
            def.ident
        ))),
    }
}
