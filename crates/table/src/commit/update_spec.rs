//! Partition spec update: new data is written with the new spec; files written under older
//! specs stay valid and readable (each manifest records the spec its files use).

use iceberg::spec::{TableMetadata, TableMetadataBuilder, UnboundPartitionSpec};

use super::MetadataUpdate;
use crate::error::Result;

/// Makes `spec` the table's default partition spec.
#[derive(Debug, Clone)]
pub struct UpdatePartitionSpec {
    /// The new spec (bound against the current schema).
    pub spec: UnboundPartitionSpec,
}

impl MetadataUpdate for UpdatePartitionSpec {
    fn apply(&self, _base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder> {
        Ok(builder.add_default_partition_spec(self.spec.clone())?)
    }
}
