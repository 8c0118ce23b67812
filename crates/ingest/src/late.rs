//! The contract's event-time rules on a decoded batch: the event time of each row, the split
//! of late rows from on-time ones, and under `current-partition` the arrival time each row is
//! partitioned by. Lateness is judged against the table's event-time
//! watermark (see the service's watermark), not the wall clock, so a new table reading a
//! topic's history, or a table hours behind, does not dead-letter what it catches up on.

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, TimestampMicrosecondType};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{ArrowError, DataType, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow_select::filter::filter_record_batch;
use calve_contract::ResolvedColumn;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Each row's event time (µs since the epoch) from `column`, a timestamp or date column;
/// `None` where it is null.
pub fn event_micros(batch: &RecordBatch, column: &str) -> Result<Vec<Option<i64>>, ArrowError> {
    let idx = batch.schema().index_of(column)?;
    let col = batch.column(idx);
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Ok(col.as_primitive::<TimestampMicrosecondType>().iter().collect())
        }
        DataType::Date32 => Ok(col
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| d.map(|d| d as i64 * MICROS_PER_DAY))
            .collect()),
        other => Err(ArrowError::SchemaError(format!(
            "event time column {column} has type {other}"
        ))),
    }
}

/// Splits `batch` (whose event times are `micros`) into on-time rows and the indices (into
/// `batch`) of late rows, those before `cutoff_us`. Rows with no event time are on time:
/// lateness cannot be judged without one.
pub fn split_late(
    batch: &RecordBatch,
    micros: &[Option<i64>],
    cutoff_us: i64,
) -> Result<(RecordBatch, Vec<usize>), ArrowError> {
    let is_late = |t: &Option<i64>| matches!(t, Some(t) if *t < cutoff_us);
    let late: Vec<usize> = micros
        .iter()
        .enumerate()
        .filter(|(_, t)| is_late(t))
        .map(|(i, _)| i)
        .collect();
    if late.is_empty() {
        return Ok((batch.clone(), late));
    }
    let keep: BooleanArray = micros.iter().map(|t| Some(!is_late(t))).collect();
    Ok((filter_record_batch(batch, &keep)?, late))
}

/// `schema` and `columns` without `column`: what decoders decode under `current-partition`,
/// whose arrival column calve fills ([`stamp_arrival`]).
pub fn without_column(
    schema: &SchemaRef,
    columns: &[ResolvedColumn],
    column: &str,
) -> (SchemaRef, Vec<ResolvedColumn>) {
    let fields: Vec<FieldRef> = schema.fields().iter().filter(|f| f.name() != column).cloned().collect();
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let columns = columns.iter().filter(|c| c.name != column).cloned().collect();
    (schema, columns)
}

/// `batch`, decoded without `column` (see [`without_column`]), as a batch of the table's
/// `schema`: `column` (the arrival column, a timestamp) holds `arrivals_us`, one per row.
pub fn stamp_arrival(
    batch: RecordBatch,
    schema: &SchemaRef,
    column: &str,
    arrivals_us: Vec<i64>,
) -> Result<RecordBatch, ArrowError> {
    let idx = schema.index_of(column)?;
    let zone = match schema.field(idx).data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, zone) => zone.clone(),
        other => {
            return Err(ArrowError::SchemaError(format!(
                "arrival column {column} has type {other}"
            )))
        }
    };
    let mut columns = batch.columns().to_vec();
    let arrivals = TimestampMicrosecondArray::from(arrivals_us).with_timezone_opt(zone);
    columns.insert(idx, Arc::new(arrivals) as ArrayRef);
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use arrow_schema::Field;

    use super::*;

    #[test]
    fn splits_rows_older_than_the_cutoff() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            true,
        )]));
        let ts = TimestampMicrosecondArray::from(vec![Some(100), Some(5), None, Some(50)]).with_timezone("+00:00");
        let batch = RecordBatch::try_new(schema, vec![Arc::new(ts)]).unwrap();
        let micros = event_micros(&batch, "ts").unwrap();
        assert_eq!(micros, vec![Some(100), Some(5), None, Some(50)]);
        let (kept, late) = split_late(&batch, &micros, 50).unwrap();
        assert_eq!(late, vec![1]);
        assert_eq!(kept.num_rows(), 3);
    }

    #[test]
    fn the_arrival_column_is_decoded_without_and_stamped_in_its_place() {
        let zone: Arc<str> = "+00:00".into();
        let ty = DataType::Timestamp(TimeUnit::Microsecond, Some(zone));
        let table = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("arrived_at", ty, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let (decoded_as, _) = without_column(&table, &[], "arrived_at");
        assert_eq!(decoded_as.fields().len(), 2);
        let decoded = RecordBatch::try_new(
            decoded_as,
            vec![
                Arc::new(arrow_array::Int64Array::from(vec![1, 2])),
                Arc::new(arrow_array::StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let stamped = stamp_arrival(decoded, &table, "arrived_at", vec![7, 9]).unwrap();
        assert_eq!(stamped.schema(), table);
        assert_eq!(event_micros(&stamped, "arrived_at").unwrap(), vec![Some(7), Some(9)]);
    }
}
