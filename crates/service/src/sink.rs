//! One Iceberg table a pipeline commits to (the target table or its dead-letter table): its
//! committer, its data writer and the restore point it holds. How rows reach it (appended, or
//! keyed through an index) is [`crate::target`]'s business.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use calve_contract::{ColumnType, Contract, ResolvedColumn};
use calve_table::catalog::schema::column_type_of;
use calve_table::catalog::schema::{columns_not_in, effective_columns, iceberg_type, nested_fields_added};
use calve_table::commit::event_time::EventTimeMarks;
use calve_table::commit::hold::{Action, Applied, HoldState, SetHoldState, CONTRACT_EDIT};
use calve_table::commit::lost::LostRange;
use calve_table::commit::restore::{self, Offsets};
use calve_table::commit::{
    claim_epoch, Append, CommitOutcome, Committer, Evolve, RestoreUpdate, SchemaChange, UpdateSchema, ADDED_FROM_EVENTS,
};
use calve_table::write::data::{arrow_schema, DataWriter};
use calve_table::{Catalog, TableDefinition, TableError};
use iceberg::spec::{DataFile, TableMetadata, TableMetadataRef, Type};
use iceberg::TableIdent;

use crate::error::ServiceError;
use crate::hold::{announce, commit_approved, contract_hold, update_unclaimed};
use crate::partitioning::check_partitioning;
use crate::preflight::contract_diff;

/// The most columns calve adds to a table from events on its own: past them (a producer using
/// keys as data) new fields are counted as unknown, not turned into columns.
pub const MAX_ADDED_COLUMNS: usize = 200;

/// A table this process owns for the pipeline's lifetime.
pub struct Sink {
    catalog: Catalog,
    committer: Committer,
    writer: DataWriter,
    schema: SchemaRef,
    /// The table as last committed or loaded (new columns are planned against it).
    meta: TableMetadataRef,
    /// The contract's columns as the table has them (approved widenings, approved optional).
    declared: Vec<ResolvedColumn>,
    /// Columns the table has that the contract does not list (added by calve from events).
    added: Vec<ResolvedColumn>,
    /// Schema holds, decisions and rejections, as the table was loaded.
    holds: HoldState,
    /// Columns the buffered rows need that the next commit adds.
    pending: Option<Evolve>,
    /// The table as the next commit will make it, when it changes the schema.
    planned: Option<TableMetadataRef>,
    /// Nested fields calve added to struct columns from events (counted with `added`
    /// against [`MAX_ADDED_COLUMNS`]).
    nested_added: usize,
    /// Fields events carried that cannot become columns (the name clashes with a partition
    /// field or a nested path, or the cap is reached); they stay counted as unknown.
    refused: HashSet<String>,
    /// The restore point the table holds now.
    pub offsets: Offsets,
}

impl Sink {
    /// Creates the table if needed, claims it (fencing older owners) and reads its restore
    /// point.
    pub async fn open(
        catalog: &Catalog,
        def: &TableDefinition,
        contract: Option<&Contract>,
        target_file_size: u64,
    ) -> Result<Self, ServiceError> {
        let state = catalog.ensure_table(def).await?;
        // Before schema differences: no approval could make a table partitioned otherwise.
        if let Some(c) = contract {
            check_partitioning(def, &state.metadata, &c.renames())?;
        }
        // Breaking differences are held before the table is claimed: a held pipeline must not
        // fence the one that may still be running with the old contract.
        match contract {
            Some(c) => drop(contract_changes(catalog, def, &state.metadata, c).await?),
            None => check_schema(def, &state.metadata)?,
        }
        let epoch = claim_epoch(catalog, &def.ident).await?;
        let committer = Committer::new(catalog.clone(), def.ident.clone(), epoch);
        if let Some(c) = contract {
            // Judged again on the claimed table: an older owner may have changed it meanwhile.
            let meta = catalog.load(&def.ident).await?.metadata;
            let changes = contract_changes(catalog, def, &meta, c).await?;
            apply_contract_changes(&committer, &def.ident, &meta, changes).await?;
        }
        let state = catalog.load(&def.ident).await?;
        let offsets = restore::restore_point(&state.metadata)?.unwrap_or_default();
        let holds = HoldState::of(&state.metadata)?;
        let schema = state.metadata.current_schema();
        let added = contract.map_or_else(Vec::new, |c| columns_not_in(schema, c.columns()));
        let declared = contract.map_or_else(Vec::new, |c| {
            effective_columns(schema, c.columns(), &holds.approved_optional())
        });
        Ok(Sink {
            catalog: catalog.clone(),
            committer,
            writer: DataWriter::new(&state.metadata, catalog.file_io().clone(), target_file_size)?,
            schema: arrow_schema(&state.metadata)?,
            meta: state.metadata.clone(),
            declared,
            added,
            holds,
            pending: None,
            planned: None,
            nested_added: nested_fields_added(state.metadata.current_schema()),
            refused: HashSet::new(),
            offsets,
        })
    }

    /// The table's name.
    pub fn ident(&self) -> &TableIdent {
        self.committer.ident()
    }

    /// The catalog it lives in.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Its committer (holding this process's writer epoch).
    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    /// The Arrow schema rows must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// What a commit that consumed Kafka up to `progress.to` tells the table.
    pub fn restore_update(&self, progress: &Progress<'_>) -> RestoreUpdate {
        RestoreUpdate {
            from: self.offsets.clone(),
            to: progress.to.clone(),
            unknown_fields: progress.unknown.clone(),
            lost_records: progress.lost.to_vec(),
            evolve: self.pending.clone(),
            event_time: progress.event_time.cloned(),
            exact: false,
        }
    }

    /// The table as last committed or loaded.
    pub fn metadata(&self) -> &TableMetadataRef {
        &self.meta
    }

    /// The table as files are written for now: [`Sink::metadata`] with the schema changes
    /// planned for the next commit.
    pub fn planned(&self) -> &TableMetadataRef {
        self.planned.as_ref().unwrap_or(&self.meta)
    }

    /// The columns rows are decoded with: the contract's as the table has them, then those
    /// calve added that the contract does not list.
    pub fn columns(&self) -> Vec<ResolvedColumn> {
        self.declared.iter().chain(&self.added).cloned().collect()
    }

    /// Schema holds, decisions and rejections, as the table was opened.
    pub fn holds(&self) -> &HoldState {
        &self.holds
    }

    /// Plans new optional columns `columns` (name and type; a dotted path names a new field
    /// of a struct column, or of a struct nested in one) for the next commit: files are
    /// written with them from now on, and that commit adds them to the table together with
    /// its rows. A field that cannot be added (its name clashes with a partition field or a
    /// nested field's path, or calve already added [`MAX_ADDED_COLUMNS`] on its own) is left
    /// out, said once, and stays counted as unknown. Returns the paths planned.
    pub fn add_columns(&mut self, columns: &[(String, ColumnType)]) -> Result<Vec<String>, ServiceError> {
        let mut evolve = self.take_plan();
        let mut planned = None;
        let mut names = Vec::new();
        for (path, ty) in columns {
            if self.refused.contains(path) {
                continue;
            }
            if self.added.len() + self.nested_added >= MAX_ADDED_COLUMNS {
                tracing::warn!(table = %self.ident(), field = %path, "events carry more new fields than the {MAX_ADDED_COLUMNS} calve adds on its own; counting the rest as unknown");
                self.refused.insert(path.clone());
                continue;
            }
            let doc = Some(ADDED_FROM_EVENTS.to_string());
            let mut parts: Vec<String> = path.split('.').map(str::to_string).collect();
            let name = parts.pop().unwrap_or_default();
            evolve.changes.push(match parts.is_empty() {
                true => SchemaChange::AddTyped {
                    name: name.clone(),
                    ty: ty.clone(),
                    doc: doc.clone(),
                },
                false => SchemaChange::AddNested {
                    parent: parts.clone(),
                    name,
                    ty: ty.clone(),
                    doc: doc.clone(),
                },
            });
            match evolve.apply_to(&self.meta) {
                Ok(meta) => {
                    names.push(path.clone());
                    match parts.first() {
                        None => self.added.push(ResolvedColumn {
                            name: path.clone(),
                            ty: ty.clone(),
                            required: false,
                            doc,
                            unit: None,
                            decimal_bytes: false,
                        }),
                        Some(column) => {
                            self.nested_added += 1;
                            let field = meta.current_schema().as_struct().field_by_name(column).cloned();
                            let ty = field.and_then(|f| column_type_of(&f.field_type));
                            for c in self
                                .declared
                                .iter_mut()
                                .chain(self.added.iter_mut())
                                .filter(|c| &c.name == column)
                            {
                                c.ty = ty.clone().unwrap_or_else(|| c.ty.clone());
                            }
                        }
                    }
                    planned = Some(meta);
                }
                Err(e) => {
                    evolve.changes.pop();
                    tracing::warn!(table = %self.ident(), field = %path, "events carry a field that cannot become a column ({e}); counting it as unknown");
                    self.refused.insert(path.clone());
                }
            }
        }
        self.keep_plan(evolve, planned)?;
        Ok(names)
    }

    /// The schema changes planned for the next commit so far, to add to.
    fn take_plan(&mut self) -> Evolve {
        self.pending
            .take()
            .unwrap_or_else(|| Evolve::on(&self.meta, Vec::new()))
    }

    /// Keeps `evolve` as the plan for the next commit; files are written as `planned` (the
    /// table with the plan applied, when it grew) from now on.
    fn keep_plan(&mut self, evolve: Evolve, planned: Option<TableMetadata>) -> Result<(), ServiceError> {
        if let Some(meta) = planned {
            self.writer = DataWriter::new(&meta, self.catalog.file_io().clone(), self.writer.target_file_size())?;
            self.schema = arrow_schema(&meta)?;
            self.planned = Some(Arc::new(meta));
        }
        self.pending = Some(evolve).filter(|e| !e.changes.is_empty());
        Ok(())
    }

    /// Plans widenings `columns` (name and wider type: int → long) for the next commit, as
    /// [`Sink::add_columns`] plans new columns: files are written with the wider type from
    /// now on, and that commit widens the table together with its rows. A widening the
    /// table refuses is said once and left out (the records stay dead letters or holds).
    /// Returns the names planned.
    pub fn widen_columns(&mut self, columns: &[(String, ColumnType)]) -> Result<Vec<String>, ServiceError> {
        let mut evolve = self.take_plan();
        let mut planned = None;
        let mut names = Vec::new();
        for (name, ty) in columns {
            let key = format!("widen {name}");
            let Type::Primitive(to) = iceberg_type(ty, &mut 0) else {
                continue;
            };
            if self.refused.contains(&key) {
                continue;
            }
            evolve.changes.push(SchemaChange::Widen { name: name.clone(), to });
            match evolve.apply_to(&self.meta) {
                Ok(meta) => {
                    planned = Some(meta);
                    names.push(name.clone());
                    for c in self
                        .declared
                        .iter_mut()
                        .chain(self.added.iter_mut())
                        .filter(|c| &c.name == name)
                    {
                        c.ty = ty.clone();
                    }
                }
                Err(e) => {
                    evolve.changes.pop();
                    tracing::warn!(table = %self.ident(), column = %name, "values need {ty} but the column cannot be widened ({e})");
                    self.refused.insert(key);
                }
            }
        }
        self.keep_plan(evolve, planned)?;
        Ok(names)
    }

    /// After a commit: a schema change it carried is now the table's.
    pub(crate) async fn committed(&mut self) -> Result<(), ServiceError> {
        self.planned = None;
        if self.pending.take().is_some() {
            self.meta = self.catalog.load(self.committer.ident()).await?.metadata;
        }
        Ok(())
    }

    /// Writes `batches` as data files (not yet part of the table).
    pub async fn write(&self, batches: &[RecordBatch]) -> Result<Vec<DataFile>, ServiceError> {
        Ok(self.writer.write(batches).await?)
    }

    /// Commits `files` with what `progress` says.
    pub async fn commit(
        &mut self,
        files: Vec<DataFile>,
        progress: &Progress<'_>,
    ) -> Result<CommitReport, ServiceError> {
        let report = CommitReport::of(&files, &[]);
        let restore = self.restore_update(progress);
        let to = progress.to;
        let outcome = self.committer.commit(&Append::new(files), &restore).await?;
        if matches!(outcome, CommitOutcome::AlreadyCommitted { .. }) {
            tracing::info!(table = %self.committer.ident(), "commit had already landed");
        }
        self.offsets = to.clone();
        self.committed().await?;
        Ok(report)
    }
}

/// What a commit tells the table besides its files.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The restore point: next offsets to read.
    pub to: &'a Offsets,
    /// Fields the committed records carried that the table has no column for (added to the
    /// table's count).
    pub unknown: &'a BTreeMap<String, u64>,
    /// Records Kafka deleted before they were read (added to the table's record of gaps).
    pub lost: &'a [LostRange],
    /// The table's event-time progress (`None`: carried forward).
    pub event_time: Option<&'a EventTimeMarks>,
}

impl<'a> Progress<'a> {
    /// Only a restore point (the dead-letter table's commits).
    pub fn to(to: &'a Offsets) -> Self {
        Progress {
            to,
            unknown: EMPTY_COUNTS,
            lost: &[],
            event_time: None,
        }
    }
}

static EMPTY_COUNTS: &BTreeMap<String, u64> = &BTreeMap::new();

/// What a commit wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitReport {
    /// Data files.
    pub files: usize,
    /// Rows.
    pub rows: u64,
    /// Bytes of Parquet.
    pub bytes: u64,
    /// Position-delete files.
    pub delete_files: usize,
}

impl CommitReport {
    pub(crate) fn of(data: &[DataFile], deletes: &[DataFile]) -> Self {
        CommitReport {
            files: data.len(),
            rows: data.iter().map(|f| f.record_count()).sum(),
            bytes: data.iter().chain(deletes).map(|f| f.file_size_in_bytes()).sum(),
            delete_files: deletes.len(),
        }
    }
}

/// What a start does to the table's schema so it matches its contract.
#[derive(Default)]
struct ContractChanges {
    /// Changes in order: approved breaking ones first (a rename before the widening of the
    /// renamed column), then additive ones.
    changes: Vec<SchemaChange>,
    /// The approved hold on a contract edit these changes end, with the state it was in.
    approved: Option<(HoldState, Applied)>,
    /// An undecided contract-edit hold the contract no longer asks for (it was restored).
    stale: Option<String>,
}

/// The changes that bring the table to its contract: additive ones (a new optional column, a
/// widening, required → optional) apply on their own; breaking ones (a rename, a drop, a new
/// required column, a narrowing) put the table under a hold until the approver approves the
/// proposed changes — then they apply too — or the contract is restored. Read before the
/// table is claimed; a hold is written under the table's current epoch.
async fn contract_changes(
    catalog: &Catalog,
    def: &TableDefinition,
    meta: &iceberg::spec::TableMetadata,
    contract: &Contract,
) -> Result<ContractChanges, ServiceError> {
    let diff = contract_diff(meta, contract);
    let holds = HoldState::of(meta)?;
    if diff.breaking.is_empty() {
        let stale = holds
            .hold
            .as_ref()
            .filter(|h| h.kind == CONTRACT_EDIT && holds.decided().is_none());
        return Ok(ContractChanges {
            changes: diff.additive,
            approved: None,
            stale: stale.map(|h| h.id.clone()),
        });
    }
    if let Some(other) = holds.hold.as_ref().filter(|h| h.kind != CONTRACT_EDIT) {
        // Records held under the old schema are settled first; the edit waits for them.
        return Err(ServiceError::Config(format!(
            "{}: held at {} ({}), and the contract now also changes the table's schema in ways that break its \
             readers ({}); restore the contract until that hold is decided and applied, then edit it again",
            contract.table.name,
            other.id,
            other.kind,
            diff.breaking.join("; ")
        )));
    }
    let hold = contract_hold(contract, &diff);
    if let Some((held, decision)) = holds
        .decided()
        .filter(|(h, d)| h.id == hold.id && d.action == Action::Approve)
    {
        let mut changes = diff.fixes.clone().unwrap_or_default();
        changes.extend(diff.additive);
        let applied = Applied {
            decision: decision.clone(),
            hold: held.clone(),
            schema_id: 0, // set when it applies (`commit_approved`)
        };
        return Ok(ContractChanges {
            changes,
            approved: Some((holds.clone(), applied)),
            stale: None,
        });
    }
    if holds.hold.as_ref().map(|h| &h.id) != Some(&hold.id) {
        update_unclaimed(catalog, &def.ident, &SetHoldState::hold(&hold)).await?;
    }
    announce(&contract.table.name, &hold);
    Err(ServiceError::Held {
        table: contract.table.name.clone(),
        hold: hold.id,
    })
}

/// Applies what [`contract_changes`] found, as the table's claimed owner: an approved edit
/// lands with the record of its approval and the end of its hold in one metadata update.
async fn apply_contract_changes(
    committer: &Committer,
    ident: &TableIdent,
    meta: &iceberg::spec::TableMetadata,
    found: ContractChanges,
) -> Result<(), ServiceError> {
    let ContractChanges {
        changes,
        approved,
        stale,
    } = found;
    match approved {
        Some((state, applied)) => {
            tracing::info!(table = %ident, ?changes, by = %applied.decision.by, "applying the approved contract edit");
            commit_approved(committer, meta, &state, applied, changes, &state.rejections).await?;
        }
        None if !changes.is_empty() => {
            tracing::info!(table = %ident, ?changes, "the contract adds to the table's schema; applying");
            committer.update_metadata(&UpdateSchema { changes }).await?;
        }
        None => {}
    }
    if let Some(id) = stale {
        tracing::info!(table = %ident, hold = %id, "the contract no longer makes the held edit; ending the hold");
        if let Err(e) = committer.update_metadata(&SetHoldState::clear(&id)).await {
            // Decided or replaced meanwhile: whoever did that settles it.
            tracing::info!(table = %ident, "the hold was not ended: {e}");
        }
    }
    Ok(())
}

/// A table whose schema must equal its definition (the dead-letter table, whose columns calve
/// owns): one with a column missing, added, of another type or of other nullability is
/// refused rather than written with columns silently missing.
fn check_schema(def: &TableDefinition, meta: &iceberg::spec::TableMetadata) -> Result<(), ServiceError> {
    let shape = |s: &iceberg::spec::Schema| -> HashMap<String, (Option<ColumnType>, bool)> {
        s.as_struct()
            .fields()
            .iter()
            .map(|f| (f.name.clone(), (column_type_of(&f.field_type), f.required)))
            .collect()
    };
    if shape(&def.schema) != shape(meta.current_schema()) {
        return Err(ServiceError::Table(TableError::InvalidData {
            table: def.ident.to_string(),
            reason: "the table's schema differs from the one calve defines for it".into(),
        }));
    }
    Ok(())
}
