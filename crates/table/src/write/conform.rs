//! Rows of an older shape of a table, brought to its current shape: files written before a
//! schema change (read back by compaction and erasure) and rows buffered before a change
//! planned for the next commit. Columns and struct fields are matched by Iceberg field id
//! (so a renamed column keeps its values), by name where a side has none; what the older
//! shape lacks reads null, a widened type is cast, a dropped column is left behind.

use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::{ArrowError, DataType, Field, Fields, SchemaRef};
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;

/// `batch` as rows of `schema`.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema() == *schema {
        return Ok(batch.clone());
    }
    let columns = pick(
        batch.schema().fields(),
        batch.columns(),
        schema.fields(),
        batch.num_rows(),
    )?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// For each field of `to`: the column of `from` that is the same field, conformed, or nulls.
fn pick(from: &Fields, columns: &[ArrayRef], to: &Fields, rows: usize) -> Result<Vec<ArrayRef>, ArrowError> {
    to.iter()
        .map(|field| match position(from, field) {
            Some(i) => conform_array(&columns[i], field.data_type()),
            None => Ok(new_null_array(field.data_type(), rows)),
        })
        .collect()
}

/// Where `field` is among `fields`: by field id when both carry one, else by name.
fn position(fields: &Fields, field: &Field) -> Option<usize> {
    match field_id(field) {
        Some(id) if fields.iter().any(|f| field_id(f).is_some()) => fields.iter().position(|f| field_id(f) == Some(id)),
        _ => fields.iter().position(|f| f.name() == field.name()),
    }
}

fn field_id(field: &Field) -> Option<&str> {
    field.metadata().get(PARQUET_FIELD_ID_META_KEY).map(String::as_str)
}

/// `array` as an array of `to`: structs field by field (recursively), other types cast
/// (exact for every widening Iceberg allows).
fn conform_array(array: &ArrayRef, to: &DataType) -> Result<ArrayRef, ArrowError> {
    if array.data_type() == to {
        return Ok(array.clone());
    }
    match (array.as_any().downcast_ref::<StructArray>(), to) {
        (Some(st), DataType::Struct(fields)) => {
            let children = pick(st.fields(), st.columns(), fields, st.len())?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                st.nulls().cloned(),
            )?))
        }
        _ => arrow_cast::cast(array, to),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use arrow_array::{Int32Array, Int64Array, StringArray};
    use arrow_schema::Schema;

    fn id(f: Field, id: i32) -> Field {
        f.with_metadata(HashMap::from([(PARQUET_FIELD_ID_META_KEY.to_string(), id.to_string())]))
    }

    /// An older shape: `qty` int, `addr` without `floor`, `who` since renamed to `buyer`, and
    /// `gone` since dropped.
    #[test]
    fn older_rows_take_the_current_shape_by_field_id() {
        let street = id(Field::new("street", DataType::Utf8, true), 3);
        let old_addr = Fields::from(vec![street.clone(), id(Field::new("zip", DataType::Int32, true), 4)]);
        let new_addr = Fields::from(vec![
            street,
            id(Field::new("zip", DataType::Int64, true), 4),
            id(Field::new("floor", DataType::Int64, true), 7),
        ]);
        let addr = StructArray::try_new(
            old_addr.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef,
                Arc::new(Int32Array::from(vec![Some(7), None])),
            ],
            Some(vec![true, false].into()),
        )
        .unwrap();
        let before = Schema::new(vec![
            id(Field::new("qty", DataType::Int32, true), 1),
            id(Field::new("addr", DataType::Struct(old_addr), true), 2),
            id(Field::new("gone", DataType::Utf8, true), 5),
            id(Field::new("who", DataType::Utf8, true), 6),
        ]);
        let after: SchemaRef = Arc::new(Schema::new(vec![
            id(Field::new("qty", DataType::Int64, true), 1),
            id(Field::new("addr", DataType::Struct(new_addr), true), 2),
            id(Field::new("buyer", DataType::Utf8, true), 6),
            id(Field::new("coupon", DataType::Utf8, true), 8),
        ]));
        let batch = RecordBatch::try_new(
            Arc::new(before),
            vec![
                Arc::new(Int32Array::from(vec![1, 2])),
                Arc::new(addr),
                Arc::new(StringArray::from(vec!["x", "y"])),
                Arc::new(StringArray::from(vec!["w1", "w2"])),
            ],
        )
        .unwrap();
        let out = conform(&batch, &after).unwrap();
        assert_eq!(out.schema(), after);
        let qty = out.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(qty.values().to_vec(), vec![1, 2]);
        let addr = out.column(1).as_any().downcast_ref::<StructArray>().unwrap();
        assert_eq!(
            (addr.is_valid(0), addr.is_valid(1)),
            (true, false),
            "the struct's own nulls"
        );
        let zip = addr.column_by_name("zip").unwrap();
        assert_eq!(zip.as_any().downcast_ref::<Int64Array>().unwrap().value(0), 7);
        assert_eq!(addr.column_by_name("floor").unwrap().null_count(), 2);
        let buyer = out.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            (buyer.value(0), buyer.value(1)),
            ("w1", "w2"),
            "a renamed column keeps its values"
        );
        assert_eq!(out.column(3).null_count(), 2);
    }
}
