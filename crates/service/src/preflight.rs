//! What the next start would do to a table whose contract may have changed since it last ran:
//! `calve check --config` prints it, so an owner sees a breaking edit (which would hold the
//! table for its approver) before deploying it, and the columns calve added from events that the contract does
//! not list yet.

use calve_contract::Contract;
use calve_table::catalog::schema::columns_not_in;
use calve_table::commit::{diff_with_contract, ContractDiff, SchemaChange, ADDED_FROM_EVENTS};
use calve_table::Catalog;
use iceberg::spec::TableMetadata;

use crate::definition::table_definition;
use crate::error::ServiceError;
use crate::hold::proposed_of;
use crate::partitioning::partitioning_differs;

/// How a contract and its table's current schema compare.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchemaCheck {
    /// The table does not exist yet (the first start creates it from the contract).
    pub new_table: bool,
    /// The contract partitions otherwise than the table, in words: `calve run` refuses the
    /// table (no approval can change a partitioning).
    pub partitioning: Option<String>,
    /// Changes the next start applies on its own.
    pub additive: Vec<String>,
    /// Changes that would hold the table at start for its approver, in words.
    pub breaking: Vec<String>,
    /// What approving them would change, in words; empty when no change makes them (the
    /// contract must be restored).
    pub approving: Vec<String>,
    /// Columns calve added from events that the contract does not list (to adopt).
    pub added_from_events: Vec<String>,
    /// Where the table is looser than the contract (approved widenings and optional
    /// columns; to adopt).
    pub looser: Vec<String>,
}

/// Compares `contract` with its table in `catalog`.
pub async fn check_schema_against_table(catalog: &Catalog, contract: &Contract) -> Result<SchemaCheck, ServiceError> {
    let def = table_definition(contract)?;
    let ident = def.ident.clone();
    if !catalog.exists(&ident).await? {
        return Ok(SchemaCheck {
            new_table: true,
            ..Default::default()
        });
    }
    let state = catalog.load(&ident).await?;
    let schema = state.metadata.current_schema();
    let diff = contract_diff(&state.metadata, contract);
    let partitioning = partitioning_differs(&def, &state.metadata, &contract.renames()).map(|(has, wanted)| {
        format!(
            "the contract partitions by {wanted}, the table by {has}: a table's partitioning is fixed when it \
             is created, so `calve run` refuses it; restore the contract, or give the table a new name"
        )
    });
    let added = columns_not_in(schema, contract.columns());
    Ok(SchemaCheck {
        new_table: false,
        partitioning,
        additive: diff.additive.iter().map(describe).collect(),
        approving: diff.fixes.iter().flatten().map(describe).collect(),
        breaking: diff.breaking,
        looser: diff.looser,
        added_from_events: added
            .into_iter()
            .filter(|c| c.doc.as_deref() == Some(ADDED_FROM_EVENTS))
            .map(|c| format!("{} {}", c.name, c.ty))
            .collect(),
    })
}

/// How `table` differs from `contract`'s columns.
pub(crate) fn contract_diff(table: &TableMetadata, contract: &Contract) -> ContractDiff {
    diff_with_contract(table, contract.columns(), &contract.renames())
}

/// A schema change in words.
fn describe(change: &SchemaChange) -> String {
    match change {
        SchemaChange::AddNested { parent, name, ty, .. } => {
            format!("add optional field `{}.{name}` {ty}", parent.join("."))
        }
        other => proposed_of(other).map_or_else(|| format!("{other:?}"), |p| p.to_string()),
    }
}
