//! Files that are not yet part of the table: Parquet data files (one per partition per commit)
//! and position-delete files. Nothing here commits; the commit layer makes written files
//! visible, and a file whose commit never happens is an orphan that maintenance removes.

pub mod conform;
pub mod data;
pub mod deletes;
mod split;

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// A column chunk whose dictionary grows past this falls back to plain encoding for the rest
/// of the chunk. parquet-rs's default (1 MiB) keeps hashing every value of a high-cardinality
/// column (ids, amounts, timestamps) into a dictionary that ends up larger than plain values
/// under zstd; at 64 KiB low-cardinality columns (statuses, countries, a few thousand
/// distinct numbers) keep their dictionaries and the others give up early. On the orders
/// workload, in memory, this wrote Parquet ~1.6x faster and 18% smaller (1.7 → 1.4 MB).
pub const DICTIONARY_PAGE_LIMIT: usize = 64 * 1024;

/// The Parquet settings of every file calve writes (data and position-delete files).
pub fn parquet_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid")))
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_LIMIT)
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    #[test]
    fn unique_values_fall_back_to_plain_and_repeated_ones_keep_their_dictionary() {
        let n = 20_000;
        let ids = Int64Array::from_iter_values(0..n);
        let status = StringArray::from_iter_values((0..n).map(|i| ["new", "paid", "shipped"][i as usize % 3]));
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(ids) as arrow_array::ArrayRef),
            ("status", Arc::new(status) as arrow_array::ArrayRef),
        ])
        .unwrap();
        let file = tempfile::tempfile().unwrap();
        let mut w =
            ArrowWriter::try_new(file.try_clone().unwrap(), batch.schema(), Some(parquet_properties())).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let rg = reader.metadata().row_group(0);
        // The encodings of the column's data pages (the dictionary page is PLAIN either way).
        let data_pages = |c: usize| -> Vec<Encoding> {
            let mask = rg.column(c).page_encoding_stats_mask().expect("page encodings");
            mask.encodings().collect()
        };
        // 20k distinct longs are 160 KB of dictionary: past the limit, the rest is plain.
        assert!(data_pages(0).contains(&Encoding::PLAIN), "{:?}", data_pages(0));
        assert_eq!(
            data_pages(1),
            vec![Encoding::RLE_DICTIONARY],
            "three statuses stay a dictionary"
        );
    }
}
