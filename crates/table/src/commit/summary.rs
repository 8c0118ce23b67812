//! Snapshot summary totals.
//!
//! The `iceberg` crate computes `total-*` properties only inside its private fast-append, so the
//! commit layer derives them here: previous snapshot's totals plus this snapshot's changes,
//! which is what Java and PyIceberg write and what readers show as table statistics.

use std::collections::HashMap;

use iceberg::spec::{DataFile, PartitionSpecRef, SchemaRef, SnapshotSummaryCollector, TableMetadata};

/// The `(total, added, removed)` key triples kept up to date.
const TOTALS: [(&str, &str, &str); 6] = [
    ("total-records", "added-records", "deleted-records"),
    ("total-files-size", "added-files-size", "removed-files-size"),
    ("total-data-files", "added-data-files", "deleted-data-files"),
    ("total-delete-files", "added-delete-files", "removed-delete-files"),
    (
        "total-position-deletes",
        "added-position-deletes",
        "removed-position-deletes",
    ),
    (
        "total-equality-deletes",
        "added-equality-deletes",
        "removed-equality-deletes",
    ),
];

/// Collects what a snapshot adds and removes on top of a table's current snapshot.
pub struct SummaryBuilder {
    collector: SnapshotSummaryCollector,
    schema: SchemaRef,
    spec: PartitionSpecRef,
    previous: Option<HashMap<String, String>>,
}

impl SummaryBuilder {
    /// A builder for a snapshot on top of `base`'s current snapshot, with its schema and spec.
    pub fn for_table(base: &TableMetadata) -> Self {
        SummaryBuilder {
            collector: SnapshotSummaryCollector::default(),
            schema: base.current_schema().clone(),
            spec: base.default_partition_spec().clone(),
            previous: base
                .current_snapshot()
                .map(|s| s.summary().additional_properties.clone()),
        }
    }

    /// Counts a file added by the snapshot.
    pub fn added(&mut self, f: &DataFile) {
        self.collector.add_file(f, self.schema.clone(), self.spec.clone());
    }

    /// Counts a file removed by the snapshot.
    pub fn removed(&mut self, f: &DataFile) {
        self.collector.remove_file(f, self.schema.clone(), self.spec.clone());
    }

    /// The summary properties: this snapshot's changes, totals carried from the previous
    /// snapshot, and `extra` (calve's restore point), which can not shadow computed values.
    pub fn build(&self, extra: &HashMap<String, String>) -> HashMap<String, String> {
        let mut props = extra.clone();
        props.extend(self.collector.build());
        for (total, added, removed) in TOTALS {
            let get = |m: &HashMap<String, String>, k: &str| m.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            let prev = self.previous.as_ref().map(|p| get(p, total)).unwrap_or(0);
            let value = prev + get(&props, added) - get(&props, removed);
            props.insert(total.to_string(), value.max(0).to_string());
        }
        props
    }
}
