//! Schema holds (`[schema] on_breaking = "hold"`): a record that breaks the table's schema (a
//! declared column's value of another type, a required column missing, a field a frozen
//! contract does not declare) stops that table at the record's offset until the contract's
//! approver decides. Other tables go on.
//!
//! The pipeline commits everything before the record, writes the hold into the table (see
//! [`calve_table::commit::hold`]) and stops consuming; `calve schema approve|reject` records
//! the decision in the table; the table's owner applies it when it reopens: an approval
//! changes the schema and clears the hold in one metadata update, a rejection records which
//! breaches go to the dead-letter table. Since offsets live in the table, resuming re-reads
//! from the restore point: nothing lost, nothing doubled, whatever crashed in between.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow_schema::SchemaRef;
use calve_contract::{ColumnType, Contract, Format, OnBreaking, ResolvedColumn};
use calve_ingest::{framed, DeadLetter, DeadLetterKind, Inferred, JsonDecoder};
use calve_table::catalog::schema::{column_type_of, iceberg_type};
use calve_table::commit::hold::{
    Action, Applied, Decision, Hold, HoldState, Proposed, Rejection, SetHoldState, CONTRACT_EDIT,
};
use calve_table::commit::{
    Committer, ContractDiff, Evolve, MetadataUpdate, SchemaChange, UpdateSchema, ADDED_FROM_EVENTS,
};
use calve_table::{Catalog, TableError};
use iceberg::spec::{TableMetadata, Type};
use iceberg::TableIdent;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::definition::table_definition;
use crate::error::ServiceError;

/// How often a held table looks for its approver's decision.
const DECISION_POLL: Duration = Duration::from_secs(1);
/// How much of the offending record a hold keeps to show.
const SAMPLE_BYTES: usize = 512;

/// The first breach per partition among `dead` that no rejection covers: where the table
/// stops in each partition.
pub(crate) fn first_breaches<'d>(dead: &'d [DeadLetter], rejections: &[Rejection]) -> BTreeMap<i32, &'d DeadLetter> {
    let mut first: BTreeMap<i32, &DeadLetter> = BTreeMap::new();
    for d in dead.iter().filter(|d| d.kind.is_breaking()) {
        let (p, o) = (d.record.partition, d.record.offset);
        if rejections.iter().any(|r| r.covers(&d.path, d.kind.as_str(), p, o)) {
            continue;
        }
        if first.get(&p).is_none_or(|f| o < f.record.offset) {
            first.insert(p, d);
        }
    }
    first
}

/// What the table is held for: breach `d`, with the change that would admit it.
pub(crate) fn hold_for(d: &DeadLetter, contract: &Contract, schema: &SchemaRef, columns: &[ResolvedColumn]) -> Hold {
    let value = d.record.value.as_deref().unwrap_or_default();
    let binary = match contract.table.format {
        Format::Avro | Format::DebeziumAvro => Some("an Avro"),
        Format::Protobuf => Some("a Protobuf"),
        _ => None,
    };
    let mut sample = match (binary, framed(value)) {
        (Some(what), Ok((id, _))) => format!("{what} record of writer schema id {id}, {} bytes", value.len()),
        _ => String::from_utf8_lossy(json_text(value)).into_owned(),
    };
    if sample.len() > SAMPLE_BYTES {
        let cut = (0..=SAMPLE_BYTES)
            .rev()
            .find(|i| sample.is_char_boundary(*i))
            .unwrap_or(0);
        sample.truncate(cut);
        sample.push('…');
    }
    Hold {
        id: format!("{}/{}@{}", d.record.topic, d.record.partition, d.record.offset),
        since_ms: chrono::Utc::now().timestamp_millis(),
        topic: d.record.topic.to_string(),
        partition: d.record.partition,
        offset: d.record.offset,
        path: d.path.clone(),
        kind: d.kind.as_str().to_string(),
        reason: d.error.clone(),
        sample,
        proposal: propose(d, contract, schema, columns),
        approver: contract.schema.approver.clone(),
    }
}

/// The schema change that admits `d`, when one exists: a top-level column made optional
/// (never a key), an int column widened to long for a value beyond int, an undeclared
/// top-level field added with the type its value shows. Anything else (a string in a number
/// column, a change inside a nested type) has no Iceberg change that keeps old rows readable:
/// only rejecting resumes the table.
fn propose(d: &DeadLetter, contract: &Contract, schema: &SchemaRef, columns: &[ResolvedColumn]) -> Vec<Proposed> {
    let top_level = !d.path.is_empty() && !d.path.contains(['.', '[']);
    if !top_level {
        return Vec::new();
    }
    let name = d.path.clone();
    match d.kind {
        DeadLetterKind::MissingRequired if !contract.keys.columns.contains(&name) => {
            vec![Proposed::MakeOptional { name }]
        }
        DeadLetterKind::SchemaMismatch => match promotion(d, columns, &contract.keys.columns) {
            Some((name, to)) => vec![Proposed::Widen {
                name,
                to: to.to_string(),
            }],
            None => Vec::new(),
        },
        DeadLetterKind::UndeclaredField if d.shows.is_some() => vec![Proposed::AddColumn {
            name,
            ty: d.shows.as_ref().map(ToString::to_string).unwrap_or_default(),
        }],
        DeadLetterKind::UndeclaredField => {
            // The type the value shows, as `evolution = "additive"` would infer it.
            let Ok(decoder) = JsonDecoder::new(schema.clone(), columns) else {
                return Vec::new();
            };
            let value = d.record.value.as_deref().unwrap_or_default();
            match decoder
                .inferring(true)
                .decode(&[json_text(value)])
                .map(|out| out.inferred.get(&name).cloned())
            {
                Ok(Some(Inferred::Type(ty))) => vec![Proposed::AddColumn {
                    name,
                    ty: ty.to_string(),
                }],
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// The legal Iceberg promotion that admits the value of schema mismatch `d`, if there is one:
/// a whole number beyond int in a top-level int column → long; a decimal with more integer
/// digits than its column's precision holds → the precision it needs (up to Parquet's next
/// storage size: 9, 18 or 38 digits, so a growing value does not widen the column again and
/// again). A float column takes any number already; a decimal's scale never changes, so more
/// fraction digits stay a mismatch. Never for a key column (`keys`): the key index and the
/// files already written must agree on the key's type.
pub(crate) fn promotion(d: &DeadLetter, columns: &[ResolvedColumn], keys: &[String]) -> Option<(String, ColumnType)> {
    if d.kind != DeadLetterKind::SchemaMismatch || d.path.is_empty() || d.path.contains(['.', '[']) {
        return None;
    }
    if keys.contains(&d.path) {
        return None;
    }
    let column = columns.iter().find(|c| c.name == d.path)?;
    if let Some(shows) = &d.shows {
        return widening(&column.ty, shows).map(|to| (d.path.clone(), to));
    }
    let value: Value = serde_json::from_slice(json_text(d.record.value.as_deref()?)).ok()?;
    match (&column.ty, value.get(&d.path)?) {
        (ColumnType::Int, Value::Number(n)) if n.as_i64().is_some() => Some((d.path.clone(), ColumnType::Long)),
        (ColumnType::Decimal { precision, scale }, v) if !column.decimal_bytes => {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return None,
            };
            let needed = decimal_digits(&text, *scale)?;
            let to = [9, 18, 38].into_iter().find(|p| *p >= needed)?;
            (needed > *precision as usize).then(|| {
                let widened = ColumnType::Decimal {
                    precision: to as u32,
                    scale: *scale,
                };
                (d.path.clone(), widened)
            })
        }
        _ => None,
    }
}

/// The promotion that lets a column of type `ty` hold values of type `shows` (a writer
/// schema's type), if Iceberg has one.
fn widening(ty: &ColumnType, shows: &ColumnType) -> Option<ColumnType> {
    match (ty, shows) {
        (ColumnType::Int, ColumnType::Long) => Some(ColumnType::Long),
        (ColumnType::Float, ColumnType::Double) => Some(ColumnType::Double),
        (
            ColumnType::Decimal { precision, scale },
            ColumnType::Decimal {
                precision: needed,
                scale: s,
            },
        ) if s == scale && needed > precision => {
            let to = [9, 18, 38].into_iter().find(|p| p >= needed)?;
            Some(ColumnType::Decimal {
                precision: to,
                scale: *scale,
            })
        }
        _ => None,
    }
}

/// The JSON text of a record value: a JSON Schema record's without its Confluent framing
/// (JSON text never starts with the framing's zero byte, so a plain JSON value is left as is).
fn json_text(value: &[u8]) -> &[u8] {
    framed(value).map_or(value, |(_, text)| text)
}

/// The precision a decimal's plain text (`-123.45`) needs at `scale`, when its fraction fits
/// the scale.
fn decimal_digits(text: &str, scale: u32) -> Option<usize> {
    let scale = scale as usize;
    let digits = text.trim().trim_start_matches(['-', '+']);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if !all(int) || !all(frac) || int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.trim_end_matches('0').len() > scale {
        return None;
    }
    Some(int.trim_start_matches('0').len() + scale)
}

/// The schema changes an approved proposal makes.
pub(crate) fn changes_of(table: &str, proposal: &[Proposed]) -> Result<Vec<SchemaChange>, ServiceError> {
    let ty = |text: &str| -> Result<ColumnType, ServiceError> {
        text.parse().map_err(|e| {
            ServiceError::Table(TableError::InvalidData {
                table: table.to_string(),
                reason: format!("the hold proposes type `{text}`: {e}"),
            })
        })
    };
    proposal
        .iter()
        .map(|p| {
            Ok(match p {
                Proposed::AddColumn { name, ty: t } => SchemaChange::AddTyped {
                    name: name.clone(),
                    ty: ty(t)?,
                    doc: Some(ADDED_FROM_EVENTS.into()),
                },
                Proposed::Widen { name, to } => match iceberg_type(&ty(to)?, &mut 0) {
                    Type::Primitive(to) => SchemaChange::Widen { name: name.clone(), to },
                    _ => {
                        return Err(ServiceError::Table(TableError::InvalidData {
                            table: table.to_string(),
                            reason: format!("the hold proposes widening `{name}` to a nested type"),
                        }))
                    }
                },
                Proposed::MakeOptional { name } => SchemaChange::MakeOptional { name: name.clone() },
                Proposed::Rename { from, to } => SchemaChange::Rename {
                    from: from.clone(),
                    to: to.clone(),
                },
                Proposed::Drop { name } => SchemaChange::Drop { name: name.clone() },
            })
        })
        .collect()
}

/// A schema change as a hold proposes it.
pub(crate) fn proposed_of(change: &SchemaChange) -> Option<Proposed> {
    Some(match change {
        SchemaChange::AddColumn { name, ty, .. } => Proposed::AddColumn {
            name: name.clone(),
            ty: column_type_of(&Type::Primitive(ty.clone()))?.to_string(),
        },
        SchemaChange::AddTyped { name, ty, .. } => Proposed::AddColumn {
            name: name.clone(),
            ty: ty.to_string(),
        },
        SchemaChange::Widen { name, to } => Proposed::Widen {
            name: name.clone(),
            to: column_type_of(&Type::Primitive(to.clone()))?.to_string(),
        },
        SchemaChange::MakeOptional { name } => Proposed::MakeOptional { name: name.clone() },
        SchemaChange::Rename { from, to } => Proposed::Rename {
            from: from.clone(),
            to: to.clone(),
        },
        SchemaChange::Drop { name } => Proposed::Drop { name: name.clone() },
        // Only evolution adds nested fields, never a hold.
        SchemaChange::AddNested { .. } => return None,
    })
}

/// The hold a breaking contract edit puts `contract`'s table under: its id names the edit (a
/// hash of what breaks), so an approval applies to exactly the edit it was given for, and a
/// different edit holds anew. The proposal makes every breaking change, or is empty when one
/// has no change to approve (then restoring the contract resumes the table).
pub(crate) fn contract_hold(contract: &Contract, diff: &ContractDiff) -> Hold {
    let proposal: Vec<Proposed> = diff
        .fixes
        .as_ref()
        .and_then(|f| f.iter().map(proposed_of).collect())
        .unwrap_or_default();
    let reason = diff.breaking.join("; ");
    // What the edit is, in an order column order does not change.
    let mut facts: Vec<String> = diff.breaking.clone();
    facts.extend(proposal.iter().map(|p| serde_json::to_string(p).unwrap_or_default()));
    facts.sort();
    let digest = Sha256::digest(facts.join("\n").as_bytes());
    let path = proposal
        .iter()
        .map(|p| match p {
            Proposed::AddColumn { name, .. }
            | Proposed::Widen { name, .. }
            | Proposed::MakeOptional { name }
            | Proposed::Drop { name } => name.clone(),
            Proposed::Rename { from, .. } => from.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Hold {
        id: format!("contract-edit:{}", hex::encode(&digest[..6])),
        since_ms: chrono::Utc::now().timestamp_millis(),
        topic: contract.table.topic.clone(),
        partition: -1,
        offset: -1,
        path,
        kind: CONTRACT_EDIT.to_string(),
        reason,
        sample: String::new(),
        proposal,
        approver: contract.schema.approver.clone(),
    }
}

/// Says loudly that `table` is held, and how to resume it.
pub(crate) fn announce(table: &str, hold: &Hold) {
    let proposal = match (hold.proposal.is_empty(), hold.kind == CONTRACT_EDIT) {
        (true, true) => "no schema change makes this edit: restore the contract".into(),
        (true, false) => {
            "no schema change admits it: `calve schema reject` sends the held records to the dead-letter table".into()
        }
        (false, _) => hold
            .proposal
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    };
    if hold.kind == CONTRACT_EDIT {
        tracing::error!(
            table, approver = %hold.approver, proposal = %proposal,
            "TABLE HELD: the contract changes the table's schema in ways that break its readers ({}); the table \
             is not started until the approver runs `calve schema approve --table {table} --by WHO` (see `calve \
             schema pending`) or the contract is restored",
            hold.reason
        );
        return;
    }
    tracing::error!(
        table, column = %hold.path, partition = hold.partition, offset = hold.offset, kind = %hold.kind,
        approver = %hold.approver, sample = %hold.sample, proposal = %proposal,
        "TABLE HELD: a record breaks the table's schema ({}); nothing from this offset on is committed until \
         the approver runs `calve schema approve|reject --table {table} --by WHO` (see `calve schema pending`)",
        hold.reason
    );
}

/// The hold that keeps `contract`'s table from opening: one on records, undecided, while the
/// contract still holds breaking records. A hold on a contract edit is judged by opening
/// instead (the contract may have been restored meanwhile).
pub(crate) fn waiting_on<'h>(holds: &'h HoldState, contract: &Contract) -> Option<&'h Hold> {
    let hold = holds.hold.as_ref()?;
    let holding = contract.schema.on_breaking == OnBreaking::Hold;
    (holding && hold.kind != CONTRACT_EDIT && holds.decided().is_none()).then_some(hold)
}

/// Waits until the hold on `ident` is decided (`true`) or shutdown is signalled (`false`).
pub(crate) async fn wait_for_decision(
    catalog: &Catalog,
    ident: &TableIdent,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<bool, ServiceError> {
    loop {
        let state = HoldState::of(&catalog.load(ident).await?.metadata)?;
        if state.hold.is_none() || state.decided().is_some() {
            return Ok(true);
        }
        tokio::select! {
            _ = tokio::time::sleep(DECISION_POLL) => {}
            _ = shutdown.changed() => return Ok(false),
        }
    }
}

/// The hold state of `contract`'s table (none when the table does not exist yet).
pub async fn schema_holds(catalog: &Catalog, contract: &Contract) -> Result<HoldState, ServiceError> {
    let ident = table_definition(contract)?.ident;
    if !catalog.exists(&ident).await? {
        return Ok(HoldState::default());
    }
    Ok(HoldState::of(&catalog.load(&ident).await?.metadata)?)
}

/// Records `by`'s decision on the hold of `contract`'s table; the table's pipeline applies it.
/// Refused when the table is not held, or when approving a hold that proposes no change.
pub async fn decide_hold(
    catalog: &Catalog,
    contract: &Contract,
    action: Action,
    by: &str,
) -> Result<Hold, ServiceError> {
    let table = &contract.table.name;
    let refused = |what: String| ServiceError::Config(format!("{table}: {what}"));
    if by.trim().is_empty() {
        return Err(refused("a decision needs --by: who decides".into()));
    }
    let ident = table_definition(contract)?.ident;
    if !catalog.exists(&ident).await? {
        return Err(refused("the table does not exist, so nothing is held".into()));
    }
    let meta = catalog.load(&ident).await?.metadata;
    let Some(hold) = HoldState::of(&meta)?.hold else {
        return Err(refused("the table is not held".into()));
    };
    if action == Action::Reject && hold.kind == CONTRACT_EDIT {
        return Err(refused(
            "a held contract edit is not rejected here: restore the contract and restart calve".into(),
        ));
    }
    if action == Action::Approve && hold.proposal.is_empty() && hold.kind == CONTRACT_EDIT {
        return Err(refused(format!(
            "no schema change makes this contract edit ({}); restore the contract and restart calve",
            hold.reason
        )));
    }
    if action == Action::Approve && hold.proposal.is_empty() {
        return Err(refused(format!(
            "no schema change admits the held record ({}); reject it to send the held records to the \
             dead-letter table, or fix the producer",
            hold.reason
        )));
    }
    if action == Action::Approve {
        // An approval the table would refuse (a name that clashes with a partition field)
        // is refused now, not retried by the pipeline forever.
        Evolve::on(&meta, changes_of(table, &hold.proposal)?)
            .apply_to(&meta)
            .map_err(|e| {
                let instead = match hold.kind == CONTRACT_EDIT {
                    true => "restore the contract",
                    false => "reject instead",
                };
                refused(format!("the proposal cannot be applied ({e}); {instead}"))
            })?;
    }
    let decision = Decision {
        hold_id: hold.id.clone(),
        action,
        by: by.to_string(),
        at_ms: chrono::Utc::now().timestamp_millis(),
    };
    // Not a claim: the table's owner keeps its epoch and applies the decision itself (the
    // update checks that the hold is still this one and undecided).
    update_unclaimed(catalog, &ident, &SetHoldState::decide(&decision)).await?;
    Ok(hold)
}

/// Commits `update` to a table this process does not own, under its owner's epoch, so the
/// owner is not fenced; re-read when an owner reopens meanwhile (and bumps it).
pub(crate) async fn update_unclaimed<U: MetadataUpdate>(
    catalog: &Catalog,
    ident: &TableIdent,
    update: &U,
) -> Result<(), ServiceError> {
    let mut last = None;
    for _ in 0..DECIDE_ATTEMPTS {
        let epoch = calve_table::commit::restore::table_epoch(&catalog.load(ident).await?.metadata)?;
        match Committer::new(catalog.clone(), ident.clone(), epoch)
            .update_metadata(update)
            .await
        {
            Err(e @ TableError::Fenced { .. }) => last = Some(e),
            other => return Ok(other?),
        }
    }
    Err(last.map_or_else(|| ServiceError::Config(format!("{ident}: no attempt made")), Into::into))
}

/// Makes the approved `changes` and ends the hold `applied` resolves, in one metadata update
/// by the table's owner: no crash can leave the change without the record of its approval,
/// or the hold without the change. `rejections` stay in force.
pub(crate) async fn commit_approved(
    committer: &Committer,
    meta: &TableMetadata,
    state: &HoldState,
    mut applied: Applied,
    changes: Vec<SchemaChange>,
    rejections: &[Rejection],
) -> Result<(), ServiceError> {
    applied.schema_id = Evolve::on(meta, changes.clone()).apply_to(meta)?.current_schema_id();
    let resolve = SetHoldState::resolve(state, applied, rejections);
    committer.update_metadata(&(UpdateSchema { changes }, resolve)).await?;
    Ok(())
}

/// How often an update to a table this process does not own is retried when its owner
/// reopens meanwhile.
const DECIDE_ATTEMPTS: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use calve_ingest::KafkaRecord;

    fn mismatch(path: &str, value: &str) -> DeadLetter {
        DeadLetter {
            record: KafkaRecord {
                topic: "t".into(),
                partition: 0,
                offset: 0,
                key: None,
                value: Some(value.as_bytes().to_vec()),
                headers: Vec::new(),
                timestamp_ms: None,
            },
            kind: DeadLetterKind::SchemaMismatch,
            error: String::new(),
            path: path.into(),
            received_at_us: 0,
            shows: None,
        }
    }

    fn column(name: &str, ty: &str) -> ResolvedColumn {
        ResolvedColumn {
            name: name.into(),
            ty: ty.parse().unwrap(),
            required: false,
            doc: None,
            unit: None,
            decimal_bytes: false,
        }
    }

    #[test]
    fn values_that_outgrow_their_column_propose_the_widening_iceberg_allows() {
        let columns = [
            column("qty", "int"),
            column("price", "decimal(10,2)"),
            column("id", "int"),
        ];
        let keys = ["id".to_string()];
        let widen = |path: &str, value: &str| {
            promotion(&mismatch(path, value), &columns, &keys).map(|(n, t)| format!("{n} {t}"))
        };
        assert_eq!(widen("qty", r#"{"qty": 3000000000}"#).as_deref(), Some("qty long"));
        assert_eq!(widen("qty", r#"{"qty": 1.5}"#), None, "a fraction is no widening");
        assert_eq!(widen("qty", r#"{"qty": "x"}"#), None);
        assert_eq!(widen("id", r#"{"id": 3000000000}"#), None, "never a key column");
        assert_eq!(
            widen("price", r#"{"price": 123456789012.5}"#).as_deref(),
            Some("price decimal(18,2)")
        );
        assert_eq!(
            widen("price", r#"{"price": "-1234567890123456789.25"}"#).as_deref(),
            Some("price decimal(38,2)")
        );
        assert_eq!(widen("price", r#"{"price": 1.005}"#), None, "the scale never changes");
        assert_eq!(
            widen("price", r#"{"price": 12.50}"#),
            None,
            "fits already: not this mismatch"
        );
        assert_eq!(widen("price", r#"{"price": 1e40}"#), None, "beyond 38 digits");
    }
}
