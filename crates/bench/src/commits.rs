//! Commit latency against table size: does a commit cost the same at 10 and 10,000 snapshots?
//!
//! Appends one small data file per commit (as a 1-second freshness band does) and reports the
//! median commit time around each mark, with the sizes that explain it: manifests in the
//! snapshot's list (bounded by manifest merge) and the metadata.json that every commit rewrites
//! (which grows with retained snapshots until expiry trims it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
use calve_table::commit::{claim_epoch, Append, Committer, RestoreUpdate};
use calve_table::write::data::{arrow_schema, DataWriter};
use calve_table::{Catalog, CatalogConfig, TableDefinition};
use iceberg::spec::{ManifestList, NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};

pub async fn run(marks: &[usize]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path().display();
    let catalog = Catalog::open(&CatalogConfig {
        name: "bench".into(),
        ..CatalogConfig::new(format!("sqlite:{d}/catalog.db"), format!("{d}/warehouse"))
    })
    .await?;
    let ident = Catalog::ident(&["bench".into()], "commits")?;
    let schema = Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
            NestedField::required(2, "ts", Type::Primitive(PrimitiveType::Timestamptz)).into(),
        ])
        .build()?;
    let spec = UnboundPartitionSpec::builder()
        .add_partition_field(2, "ts_hour", Transform::Hour)?
        .build();
    let st = catalog
        .ensure_table(&TableDefinition {
            ident: ident.clone(),
            schema,
            partition_spec: spec,
            properties: HashMap::new(),
            location: None,
        })
        .await?;
    let committer = Committer::new(catalog.clone(), ident.clone(), claim_epoch(&catalog, &ident).await?);
    let writer = DataWriter::new(&st.metadata, catalog.file_io().clone(), 64 << 20)?;
    let arrow = arrow_schema(&st.metadata)?;

    println!(
        "{:>10} {:>14} {:>12} {:>16}",
        "snapshots", "commit ms p50", "manifests", "metadata.json KB"
    );
    let last = *marks.iter().max().unwrap_or(&0);
    let mut window: Vec<f64> = Vec::new();
    for i in 0..last {
        // One file per commit, in the hour partition a 1-second band would be filling.
        let ts = 1_763_942_400_000_000i64 + (i as i64) * 1_000_000;
        let batch = RecordBatch::try_new(
            arrow.clone(),
            vec![
                Arc::new(Int64Array::from(vec![i as i64])),
                Arc::new(TimestampMicrosecondArray::from(vec![ts]).with_timezone("+00:00")),
            ],
        )?;
        let files = writer.write(&[batch]).await?;
        let at = |n: usize| BTreeMap::from([("t".to_string(), BTreeMap::from([(0, n as i64)]))]);
        let t = Instant::now();
        committer
            .commit(&Append::new(files), &RestoreUpdate::new(at(i), at(i + 1)))
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let n = i + 1;
        // Median of the 21 commits ending at each mark (all of them below 21).
        if marks.iter().any(|m| n + 21 > *m && n <= *m) {
            window.push(ms);
        }
        if marks.contains(&n) {
            window.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let p50 = window[window.len() / 2];
            window.clear();
            let (manifests, meta_kb) = sizes(&catalog, &ident).await?;
            println!("{n:>10} {p50:>14.2} {manifests:>12} {meta_kb:>16.0}");
        }
    }
    Ok(())
}

async fn sizes(catalog: &Catalog, ident: &iceberg::TableIdent) -> anyhow::Result<(usize, f64)> {
    let st = catalog.load(ident).await?;
    let m = st.metadata.as_ref();
    let snap = m.current_snapshot().expect("a snapshot");
    let list = ManifestList::parse_with_version(
        &catalog.file_io().new_input(snap.manifest_list())?.read().await?,
        m.format_version(),
    )?;
    let meta_bytes = catalog
        .file_io()
        .new_input(&st.metadata_location)?
        .metadata()
        .await?
        .size;
    Ok((list.entries().len(), meta_bytes as f64 / 1024.0))
}
