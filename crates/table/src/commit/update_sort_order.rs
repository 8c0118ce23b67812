//! Sort order update: the order compaction writes files in (and writers may follow).

use iceberg::spec::{SortOrder, TableMetadata, TableMetadataBuilder};

use super::MetadataUpdate;
use crate::error::Result;

/// Makes `order` the table's default sort order.
#[derive(Debug, Clone)]
pub struct UpdateSortOrder {
    /// The new order.
    pub order: SortOrder,
}

impl MetadataUpdate for UpdateSortOrder {
    fn apply(&self, _base: &TableMetadata, builder: TableMetadataBuilder) -> Result<TableMetadataBuilder> {
        Ok(builder.add_sort_order(self.order.clone())?.set_default_sort_order(-1)?)
    }
}
