//! Splitting a batch of rows by table partition, column-wise.
//!
//! iceberg's `RecordBatchPartitionSplitter` turns every row's partition value into an
//! Iceberg `Struct` of `Literal`s, hashes and clones it, and filters the batch once per
//! partition: per row, that cost more than writing the row to Parquet (about an eighth of
//! calve's CPU at ingest, in a profile of `calve-bench ingest`). Here the partition values
//! are computed with the same transforms (iceberg's `PartitionValueCalculator`, on whole
//! arrays), rows are grouped by the values' Arrow row encoding, and only one value per
//! partition becomes an Iceberg `Struct`. The split is the same: rows keep their order
//! within a partition, and partitions come in order of their first row. (One difference in
//! principle: the row encoding tells -0.0 from 0.0 and NaNs apart by their bits, so identity
//! partitioning on a float column would give each its own file where iceberg gives one. calve
//! tables are partitioned by hour, day or month only: see `check_partitioning` in the service.)

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StructArray, UInt32Array};
use arrow_row::{RowConverter, SortField};
use arrow_select::take::take_record_batch;
use iceberg::arrow::{arrow_struct_to_literal, PartitionValueCalculator};
use iceberg::spec::{Literal, PartitionKey, PartitionSpecRef, SchemaRef, Struct, StructType};

/// Splits batches of a table's rows by the partition each row belongs to.
pub struct PartitionSplitter {
    schema: SchemaRef,
    spec: PartitionSpecRef,
    calculator: PartitionValueCalculator,
    partition_type: StructType,
}

impl PartitionSplitter {
    /// A splitter for rows of `schema` under `spec` (a partitioned spec).
    pub fn new(schema: SchemaRef, spec: PartitionSpecRef) -> iceberg::Result<Self> {
        let calculator = PartitionValueCalculator::try_new(&spec, &schema)?;
        let partition_type = calculator.partition_type().clone();
        Ok(PartitionSplitter {
            schema,
            spec,
            calculator,
            partition_type,
        })
    }

    /// `batch`'s rows by partition, in order of each partition's first row; rows keep their
    /// order within a partition.
    pub fn split(&self, batch: &RecordBatch) -> iceberg::Result<Vec<(PartitionKey, RecordBatch)>> {
        let values = self.calculator.calculate(batch)?;
        let Some(fields) = values.as_any().downcast_ref::<StructArray>() else {
            return Err(invalid("partition values are not a struct"));
        };
        let groups = group_rows(fields.columns())?;
        let one_partition = groups.len() == 1;
        groups
            .into_iter()
            .map(|rows| {
                let key = self.key(&values, rows[0] as usize)?;
                // The common case, a commit of one day or hour: the batch as it is.
                let part = match one_partition {
                    true => batch.clone(),
                    false => take_record_batch(batch, &UInt32Array::from(rows))?,
                };
                Ok((key, part))
            })
            .collect()
    }

    /// The partition key of row `row` of the partition values.
    fn key(&self, values: &ArrayRef, row: usize) -> iceberg::Result<PartitionKey> {
        let data = match arrow_struct_to_literal(&values.slice(row, 1), &self.partition_type)?.pop() {
            Some(Some(Literal::Struct(data))) => data,
            _ => return Err(invalid("a partition value is not a struct")),
        };
        Ok(partition_key(&self.spec, &self.schema, data))
    }
}

fn partition_key(spec: &PartitionSpecRef, schema: &SchemaRef, data: Struct) -> PartitionKey {
    PartitionKey::new(spec.as_ref().clone(), Arc::clone(schema), data)
}

/// Row indices grouped by equal values across `columns`, groups in order of first row.
fn group_rows(columns: &[ArrayRef]) -> iceberg::Result<Vec<Vec<u32>>> {
    let fields = columns.iter().map(|c| SortField::new(c.data_type().clone())).collect();
    let converter = RowConverter::new(fields).map_err(arrow_error)?;
    let rows = converter.convert_columns(columns).map_err(arrow_error)?;
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut groups: Vec<Vec<u32>> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let next = groups.len();
        let g = *index.entry(row.data()).or_insert(next);
        if g == next {
            groups.push(Vec::new());
        }
        // take() indexes rows with u32; a batch past that is refused, never wrapped around.
        groups[g].push(u32::try_from(i).map_err(|_| invalid("a batch of more than 2^32 rows"))?);
    }
    Ok(groups)
}

fn invalid(message: &str) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::DataInvalid, message.to_string())
}

fn arrow_error(e: arrow_schema::ArrowError) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::DataInvalid, "grouping rows by partition").with_source(e)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow_array::{Int32Array, StringArray, TimestampMicrosecondArray};
    use iceberg::arrow::{schema_to_arrow_schema, RecordBatchPartitionSplitter};
    use iceberg::spec::{NestedField, PartitionSpec, PrimitiveType, Schema, Transform, Type};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(
            Schema::builder()
                .with_fields(vec![
                    NestedField::optional(1, "id", Type::Primitive(PrimitiveType::Int)).into(),
                    NestedField::optional(2, "status", Type::Primitive(PrimitiveType::String)).into(),
                    NestedField::optional(3, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
                ])
                .build()
                .expect("schema"),
        )
    }

    fn spec(schema: &SchemaRef, fields: &[(i32, &str, Transform)]) -> PartitionSpecRef {
        let mut b = PartitionSpec::builder(schema.clone());
        for (source, name, transform) in fields {
            b = b
                .add_partition_field(
                    schema.field_by_id(*source).expect("field").name.clone(),
                    *name,
                    *transform,
                )
                .expect("field");
        }
        Arc::new(b.build().expect("spec"))
    }

    fn batch(schema: &SchemaRef, n: usize) -> RecordBatch {
        // A fixed mix of days, statuses and nulls, so several partitions interleave.
        let day = 86_400_000_000i64;
        let ids: Int32Array = (0..n).map(|i| (i % 7 != 3).then_some(i as i32 * 37 % 101)).collect();
        let statuses: StringArray = (0..n)
            .map(|i| ["new", "paid", "shipped"].get(i * 5 % 4).copied())
            .collect();
        let ts: TimestampMicrosecondArray = (0..n)
            .map(|i| (i % 11 != 5).then_some(1_700_000_000_000_000 + (i as i64 * 7 % 5) * day + i as i64))
            .collect();
        let arrow = Arc::new(schema_to_arrow_schema(schema).expect("arrow schema"));
        let ts = ts.with_timezone("+00:00");
        RecordBatch::try_new(arrow, vec![Arc::new(ids), Arc::new(statuses), Arc::new(ts)]).expect("batch")
    }

    /// Each partition's rows by its path.
    fn by_path(parts: Vec<(PartitionKey, RecordBatch)>) -> BTreeMap<String, RecordBatch> {
        parts.into_iter().map(|(k, b)| (k.to_path(), b)).collect()
    }

    #[test]
    fn splits_as_iceberg_does_with_rows_in_order() {
        let schema = schema();
        let specs = [
            vec![(3, "ts_day", Transform::Day)],
            vec![(2, "status", Transform::Identity), (3, "ts_hour", Transform::Hour)],
            vec![
                (1, "id_bucket", Transform::Bucket(4)),
                (2, "status_trunc", Transform::Truncate(1)),
            ],
            vec![(1, "id", Transform::Identity)],
        ];
        for fields in specs {
            let spec = spec(&schema, &fields);
            let batch = batch(&schema, 500);
            let ours = by_path(
                PartitionSplitter::new(schema.clone(), spec.clone())
                    .expect("splitter")
                    .split(&batch)
                    .expect("split"),
            );
            let theirs = by_path(
                RecordBatchPartitionSplitter::try_new_with_computed_values(schema.clone(), spec.clone())
                    .expect("splitter")
                    .split(&batch)
                    .expect("split"),
            );
            assert!(ours.len() > 1, "{fields:?}: the test batch spans several partitions");
            assert_eq!(ours, theirs, "{fields:?}");
            let total: usize = ours.values().map(RecordBatch::num_rows).sum();
            assert_eq!(total, batch.num_rows());
        }
    }

    #[test]
    fn partitions_come_in_order_of_their_first_row() {
        let schema = schema();
        let spec = spec(&schema, &[(2, "status", Transform::Identity)]);
        let arrow = Arc::new(schema_to_arrow_schema(&schema).expect("arrow schema"));
        let statuses = ["paid", "new", "paid", "shipped", "new", "paid"];
        let batch = RecordBatch::try_new(
            arrow,
            vec![
                Arc::new(Int32Array::from_iter_values(0..6)),
                Arc::new(StringArray::from_iter_values(statuses)),
                Arc::new(TimestampMicrosecondArray::from(vec![None; 6]).with_timezone("+00:00")),
            ],
        )
        .expect("batch");
        let parts = PartitionSplitter::new(schema, spec)
            .expect("splitter")
            .split(&batch)
            .expect("split");
        let got: Vec<(String, Vec<i32>)> = parts
            .iter()
            .map(|(k, b)| {
                let ids = b.column(0).as_any().downcast_ref::<Int32Array>().expect("ids");
                (k.to_path(), ids.values().to_vec())
            })
            .collect();
        let want = [
            ("status=paid", vec![0, 2, 5]),
            ("status=new", vec![1, 4]),
            ("status=shipped", vec![3]),
        ];
        assert_eq!(got, want.map(|(p, ids)| (p.to_string(), ids)));
    }

    #[test]
    fn one_partition_is_the_batch_itself() {
        let schema = schema();
        let spec = spec(&schema, &[(3, "ts_month", Transform::Month)]);
        // Four rows of one November: one partition, handed on as it is.
        let batch = batch(&schema, 20).slice(0, 4);
        let parts = PartitionSplitter::new(schema, spec)
            .expect("splitter")
            .split(&batch)
            .expect("split");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].1, batch);
    }
}
