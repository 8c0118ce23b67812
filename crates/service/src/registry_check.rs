//! `calve check --config` for tables whose writer schemas come from a registry: what the
//! latest schema registered for the contract's topic (`<topic>-value`, the serializers'
//! default subject) would do to the table, judged exactly as the running table would judge
//! it. A producer's schema that breaks the contract shows up in CI, before its records reach
//! the table and are held or dead-lettered.

use std::sync::Arc;

use calve_contract::{ColumnType, Contract};
use calve_ingest::registry::Registry;
use calve_ingest::Router;
use calve_table::catalog::schema::{columns_not_in, effective_columns};
use calve_table::commit::hold::HoldState;
use calve_table::Catalog;

use crate::definition::table_definition;
use crate::error::ServiceError;

/// What the registry says of a contract's topic.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryVerdict {
    /// The subject has no version: producers have not registered a schema under it (or name
    /// their subjects another way).
    NoSubject,
    /// The latest version's records enter the table; with the writer fields the table lacks
    /// (`additive` adds them), each with the Iceberg type it would take, if any.
    Fits(Vec<(String, Option<ColumnType>)>),
    /// The latest version's records would not enter the table: why.
    Breaks(String),
    /// The format's records are judged one by one (JSON Schema), not by their schema.
    NotJudged,
}

/// The latest schema under `<topic>-value` and what it would do to the table.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryCheck {
    /// The subject asked about.
    pub subject: String,
    /// Its latest version and schema id, when it has one.
    pub latest: Option<(i64, u32)>,
    /// What that schema would do.
    pub verdict: RegistryVerdict,
}

/// Judges the latest schema of `contract`'s value subject against its table in `catalog` (or
/// the table the contract would create).
pub async fn check_registry_schema(
    catalog: &Catalog,
    contract: &Contract,
    registry: &Registry,
) -> Result<RegistryCheck, ServiceError> {
    let subject = format!("{}-value", contract.table.topic);
    let Some((version, id, fetched)) = registry.latest(&subject).await? else {
        return Ok(RegistryCheck {
            subject,
            latest: None,
            verdict: RegistryVerdict::NoSubject,
        });
    };
    let def = table_definition(contract)?;
    let (schema, columns) = match catalog.exists(&def.ident).await? {
        true => {
            let meta = catalog.load(&def.ident).await?.metadata;
            let current = meta.current_schema();
            let holds = HoldState::of(&meta)?;
            let mut columns = effective_columns(current, contract.columns(), &holds.approved_optional());
            columns.extend(columns_not_in(current, contract.columns()));
            (calve_table::write::data::arrow_schema(&meta)?, columns)
        }
        false => {
            let arrow = iceberg::arrow::schema_to_arrow_schema(&def.schema)
                .map_err(|e| ServiceError::Config(format!("table {}: {e}", contract.table.name)))?;
            (Arc::new(arrow), contract.columns().to_vec())
        }
    };
    let mut router = Router::new(contract, schema, &columns)?;
    let verdict = match router.learn_schema(id, &fetched) {
        Err(why) => RegistryVerdict::Breaks(why),
        Ok(()) => match router.judge_schema(id) {
            None => RegistryVerdict::NotJudged,
            Some(Ok(adds)) => RegistryVerdict::Fits(adds),
            Some(Err(why)) => RegistryVerdict::Breaks(why),
        },
    };
    Ok(RegistryCheck {
        subject,
        latest: Some((version, id)),
        verdict,
    })
}
