//! The shadow tables a rebuild writes: `<table>__rebuild` and `<dead-letter table>__rebuild`,
//! each staged under its live table's `data/` (so the files a swap brings in are the live
//! table's own, and an abandoned rebuild's are its orphans), with the live table's schema —
//! field ids included — and partitioning, so its files can replace the live table's as they
//! are.

use std::collections::BTreeMap;

use calve_table::catalog::TableState;
use calve_table::commit::swap::RebuildMark;
use calve_table::commit::{claim_epoch, Committer, MetadataUpdate};
use calve_table::{Catalog, TableDefinition};
use iceberg::spec::{Schema, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec};
use iceberg::TableIdent;

use crate::error::ServiceError;

/// Table property of a shadow table: the id of the rebuild it belongs to.
pub const REBUILD_OF_KEY: &str = "calve.rebuild-of";
/// Table property of a shadow table: where it started reading, per partition (JSON).
const START_KEY: &str = "calve.rebuild-start";
/// Suffix of a shadow table's name.
pub const SHADOW_SUFFIX: &str = "__rebuild";

/// The shadow of the live table `live` (as defined by `def`) for the rebuild `mark`, which
/// starts reading at `start`.
pub fn definition(
    def: &TableDefinition,
    live: &TableMetadata,
    mark: &RebuildMark,
    start: &BTreeMap<i32, i64>,
) -> Result<TableDefinition, ServiceError> {
    let ident = shadow_ident(&def.ident)?;
    let mut properties = def.properties.clone();
    properties.insert(REBUILD_OF_KEY.into(), mark.id.clone());
    let start = serde_json::to_string(start).map_err(|e| ServiceError::Config(e.to_string()))?;
    properties.insert(START_KEY.into(), start);
    Ok(TableDefinition {
        ident,
        schema: def.schema.clone(),
        partition_spec: def.partition_spec.clone(),
        properties,
        location: Some(mark.location(live.location())),
    })
}

/// The name of `live`'s shadow.
pub fn shadow_ident(live: &TableIdent) -> Result<TableIdent, ServiceError> {
    Ok(Catalog::ident(
        live.namespace().as_ref(),
        &format!("{}{SHADOW_SUFFIX}", live.name()),
    )?)
}

/// Creates the shadow `def` unless it exists for this rebuild (one left by another rebuild is
/// dropped first) and, until it holds a row, gives it the live table's schema and
/// partitioning. Returns where it started reading (as it was first created).
pub async fn ensure(
    catalog: &Catalog,
    def: &TableDefinition,
    live: &TableMetadata,
) -> Result<BTreeMap<i32, i64>, ServiceError> {
    let id = def.properties.get(REBUILD_OF_KEY);
    if catalog.exists(&def.ident).await? {
        let existing = catalog.load(&def.ident).await?;
        if existing.metadata.properties().get(REBUILD_OF_KEY) != id {
            tracing::warn!(table = %def.ident, "dropping the shadow table of an earlier rebuild");
            catalog.drop_table(&def.ident).await?;
        }
    }
    let state = catalog.ensure_table(def).await?;
    if state.metadata.current_snapshot().is_none() {
        align(catalog, &state, live).await?;
    }
    let start = state.metadata.properties().get(START_KEY).map_or("{}", String::as_str);
    serde_json::from_str(start).map_err(|e| {
        ServiceError::Table(calve_table::TableError::CorruptState {
            table: def.ident.to_string(),
            reason: format!("unreadable {START_KEY}: {e}"),
        })
    })
}

/// Creation gives a table fresh field ids; the shadow's rows must carry the live table's.
/// Done before the shadow holds any row.
async fn align(catalog: &Catalog, shadow: &TableState, live: &TableMetadata) -> Result<(), ServiceError> {
    let same_schema = shadow.metadata.current_schema().as_struct() == live.current_schema().as_struct();
    let same_spec = shadow.metadata.default_partition_spec().fields() == live.default_partition_spec().fields();
    if same_schema && same_spec {
        return Ok(());
    }
    let epoch = claim_epoch(catalog, &shadow.ident).await?;
    let align = Align {
        schema: live.current_schema().as_ref().clone(),
        spec: live.default_partition_spec().as_ref().clone().into_unbound(),
    };
    Committer::new(catalog.clone(), shadow.ident.clone(), epoch)
        .update_metadata(&align)
        .await?;
    Ok(())
}

/// Makes `schema` (with its field ids) and `spec` the table's current ones.
struct Align {
    schema: Schema,
    spec: UnboundPartitionSpec,
}

impl MetadataUpdate for Align {
    fn apply(&self, _base: &TableMetadata, builder: TableMetadataBuilder) -> calve_table::Result<TableMetadataBuilder> {
        Ok(builder
            .add_current_schema(self.schema.clone())?
            .add_default_partition_spec(self.spec.clone())?)
    }
}

/// Drops the shadows in `idents` that exist; their files stay (swapped in, or orphans).
pub async fn drop_all(catalog: &Catalog, idents: &[TableIdent]) -> Result<(), ServiceError> {
    for ident in idents {
        if catalog.exists(ident).await? {
            catalog.drop_table(ident).await?;
        }
    }
    Ok(())
}

/// The rebuild id a shadow table belongs to.
pub fn rebuild_of(meta: &TableMetadata) -> Option<&String> {
    meta.properties().get(REBUILD_OF_KEY)
}
