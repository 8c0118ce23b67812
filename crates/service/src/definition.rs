//! Table definitions derived from a contract: the target table and its dead-letter table.

use std::collections::HashMap;

use calve_contract::Contract;
use calve_table::catalog::schema::{dead_letter_partition_spec, dead_letter_schema, partition_spec, table_schema};
use calve_table::{Catalog, TableDefinition};

use crate::error::ServiceError;

/// Table properties that make the contract's answers visible to anyone who opens the table.
fn contract_properties(c: &Contract) -> HashMap<String, String> {
    HashMap::from([
        ("calve.contract.owner.team".into(), c.owner.team.clone()),
        ("calve.contract.owner.contact".into(), c.owner.contact.clone()),
        ("calve.contract.topic".into(), c.table.topic.clone()),
        ("calve.contract.freshness".into(), c.sla.freshness.to_string()),
        ("write.parquet.compression-codec".into(), "zstd".into()),
        // Keep the last 100 metadata files (Java's default count) and delete older ones.
        ("write.metadata.delete-after-commit.enabled".into(), "true".into()),
        ("write.metadata.previous-versions-max".into(), "100".into()),
    ])
}

/// The target table.
pub fn table_definition(c: &Contract) -> Result<TableDefinition, ServiceError> {
    let schema = table_schema(c)?;
    let partition_spec = partition_spec(c, &schema)?;
    Ok(TableDefinition {
        ident: Catalog::ident(&c.namespace(), c.table_name())?,
        schema,
        partition_spec,
        properties: contract_properties(c),
        location: None,
    })
}

/// The dead-letter table beside it.
pub fn dead_letter_definition(c: &Contract) -> Result<TableDefinition, ServiceError> {
    let schema = dead_letter_schema();
    let partition_spec = dead_letter_partition_spec(&schema)?;
    let mut properties = contract_properties(c);
    properties.insert("calve.dead-letter-for".into(), c.table.name.clone());
    Ok(TableDefinition {
        ident: Catalog::ident(&c.namespace(), &c.dead_letter_table_name())?,
        schema,
        partition_spec,
        properties,
        location: None,
    })
}
