//! The contract's late-data rule: events whose event time is older than the allowed lateness
//! (measured against wall-clock time, which only moves forward, so a replay after a crash routes
//! a late record the same way) are split off for the dead-letter table.

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, TimestampMicrosecondType};
use arrow_array::{BooleanArray, RecordBatch};
use arrow_schema::{ArrowError, DataType, TimeUnit};
use arrow_select::filter::filter_record_batch;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Splits `batch` into on-time rows and the indices (into `batch`) of late rows. Rows with no
/// event time are on time: lateness cannot be judged without one.
pub fn split_late(batch: &RecordBatch, column: &str, cutoff_us: i64) -> Result<(RecordBatch, Vec<usize>), ArrowError> {
    let idx = batch.schema().index_of(column)?;
    let col = batch.column(idx);
    let micros: Vec<Option<i64>> = match col.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            col.as_primitive::<TimestampMicrosecondType>().iter().collect()
        }
        DataType::Date32 => col
            .as_primitive::<Date32Type>()
            .iter()
            .map(|d| d.map(|d| d as i64 * MICROS_PER_DAY))
            .collect(),
        other => {
            return Err(ArrowError::SchemaError(format!(
                "event time column {column} has type {other}"
            )))
        }
    };
    let late: Vec<usize> = micros
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t, Some(t) if *t < cutoff_us))
        .map(|(i, _)| i)
        .collect();
    if late.is_empty() {
        return Ok((batch.clone(), late));
    }
    let keep: BooleanArray = micros
        .iter()
        .map(|t| Some(!matches!(t, Some(t) if *t < cutoff_us)))
        .collect();
    Ok((filter_record_batch(batch, &keep)?, late))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::TimestampMicrosecondArray;
    use arrow_schema::{Field, Schema};

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
        let (kept, late) = split_late(&batch, "ts", 50).unwrap();
        assert_eq!(late, vec![1]);
        assert_eq!(kept.num_rows(), 3);
    }
}
