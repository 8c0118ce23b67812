//! Hand-offs: files written by readers of one topic's partitions, committed by the table's one
//! committer, against a real SQLite catalog, read back by PyIceberg and DuckDB.

mod common;

use std::collections::BTreeMap;

use calve_table::commit::handoff::{gather, Answer, Handoff, Verdict};
use calve_table::commit::restore::restore_point;
use calve_table::commit::{Append, CommitOutcome};
use calve_table::TableError;
use common::{committer, ids_of, Fixture};

/// A reader's hand-off of rows `ids` for the range `from`..`to` (partition, offset pairs), as
/// the committer receives it: through the control topic's bytes.
async fn handoff(
    f: &Fixture,
    reader: &str,
    seq: u64,
    from: &[(i32, i64)],
    to: &[(i32, i64)],
    ids: std::ops::Range<i64>,
) -> Handoff {
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let files = f.files(ids).await;
    let h = Handoff::new(
        &meta,
        reader,
        seq,
        "orders",
        from.iter().copied().collect(),
        to.iter().copied().collect(),
        files,
    )
    .unwrap();
    Handoff::from_bytes(&h.to_bytes()).unwrap()
}

fn at(pairs: &[(i32, i64)]) -> BTreeMap<String, BTreeMap<i32, i64>> {
    BTreeMap::from([("orders".to_string(), pairs.iter().copied().collect())])
}

fn stale_restore(v: &Verdict) -> BTreeMap<i32, i64> {
    match v {
        Verdict::Stale { restore, .. } => restore.clone(),
        other => panic!("expected stale, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_committer_takes_readers_files_exactly_once() {
    let f = Fixture::new().await;
    let c = committer(&f).await;

    // Two readers share four partitions; the table has read nothing yet.
    let a1 = handoff(&f, "a", 1, &[], &[(0, 10), (1, 10)], 0..20).await;
    let b1 = handoff(&f, "b", 1, &[], &[(2, 10), (3, 10)], 20..40).await;
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let round = gather(&meta, "orders", &[a1.clone(), b1]).unwrap();
    assert_eq!(round.verdicts, vec![Verdict::Taken, Verdict::Taken]);
    let out = c.commit(&Append::new(round.files), &round.restore).await.unwrap();
    assert!(matches!(out, CommitOutcome::Committed { .. }));
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    assert_eq!(
        restore_point(&meta).unwrap().unwrap(),
        at(&[(0, 10), (1, 10), (2, 10), (3, 10)])
    );

    // Next round, in the order it arrives: a's next range; a's first sent again (no answer
    // reached it); a range of partition 2 read again by c, which was given the partition in
    // a rebalance and started where it thought the table stood; a's range after that, which
    // chains onto the one before it in the same commit; b's next range whose second
    // partition overlaps what is in; a hand-off whose files are garbage; one for a table
    // that was dropped and made again.
    let a2 = handoff(&f, "a", 2, &[(0, 10), (1, 10)], &[(0, 20), (1, 20)], 40..60).await;
    let c1 = handoff(&f, "c", 1, &[], &[(2, 15)], 100..110).await;
    let a3 = handoff(&f, "a", 3, &[(0, 20), (1, 20)], &[(0, 25), (1, 30)], 60..75).await;
    let b2 = handoff(&f, "b", 2, &[(2, 10), (3, 5)], &[(2, 20), (3, 20)], 110..120).await;
    let mut garbage = handoff(&f, "b", 3, &[(2, 10)], &[(2, 12)], 120..125).await;
    garbage.files = vec!["{\"not\": \"a data file\"}".to_string()];
    let mut gone = handoff(&f, "d", 1, &[(3, 10)], &[(3, 11)], 125..126).await;
    gone.table_uuid = "00000000-0000-0000-0000-000000000000".to_string();
    // And: a range of another topic; one that ends before it starts; one whose first
    // partition the table holds already and whose second it does not.
    let mut other = handoff(&f, "d", 2, &[(3, 10)], &[(3, 11)], 126..127).await;
    other.topic = "payments".to_string();
    let backwards = handoff(&f, "d", 3, &[(3, 10)], &[(3, 9)], 127..128).await;
    let partly = handoff(&f, "d", 4, &[(0, 10), (3, 10)], &[(0, 12), (3, 12)], 128..129).await;
    let round = gather(
        &meta,
        "orders",
        &[a2, a1, c1, a3, b2, garbage, gone, other, backwards, partly],
    )
    .unwrap();
    assert_eq!(round.verdicts[0], Verdict::Taken);
    assert_eq!(round.verdicts[1], Verdict::Covered);
    assert_eq!(stale_restore(&round.verdicts[2]), BTreeMap::from([(2, 10)]));
    assert_eq!(round.verdicts[3], Verdict::Taken);
    assert_eq!(stale_restore(&round.verdicts[4]), BTreeMap::from([(2, 10), (3, 10)]));
    match &round.verdicts[5] {
        Verdict::Stale { reason, .. } => assert!(reason.contains("cannot be read"), "{reason}"),
        other => panic!("garbage files taken: {other:?}"),
    }
    let reasons: Vec<String> = round.verdicts[6..]
        .iter()
        .map(|v| match v {
            Verdict::Stale { reason, .. } => reason.clone(),
            other => panic!("taken or covered: {other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("which is gone"), "{}", reasons[0]);
    assert!(reasons[1].contains("of topic payments"), "{}", reasons[1]);
    assert!(reasons[2].contains("before it starts"), "{}", reasons[2]);
    assert!(
        reasons[3].contains("partition 0 starts at offset 10, the table stands at offset 25"),
        "{}",
        reasons[3]
    );
    // What the stale hear is where the table stands with this round's taken ranges in.
    assert_eq!(stale_restore(&round.verdicts[9]), BTreeMap::from([(0, 25), (3, 10)]));
    // What the readers hear, through the control topic's bytes.
    let answer = Answer {
        reader: "c".into(),
        seq: 1,
        verdict: round.verdicts[2].clone(),
    };
    assert_eq!(Answer::from_bytes(&answer.to_bytes()).unwrap(), answer);
    assert_eq!(round.restore.from, at(&[(0, 10), (1, 10), (2, 10), (3, 10)]));
    assert_eq!(round.restore.to, at(&[(0, 25), (1, 30), (2, 10), (3, 10)]));
    // A round gathered on the table as it was before that commit is refused: its ranges
    // would go in twice.
    let late = gather(
        &meta,
        "orders",
        &[handoff(&f, "a", 2, &[(0, 10), (1, 10)], &[(0, 20), (1, 20)], 300..310).await],
    )
    .unwrap();
    c.commit(&Append::new(round.files), &round.restore).await.unwrap();
    assert_eq!(late.verdicts, vec![Verdict::Taken]);
    match c.commit(&Append::new(late.files), &late.restore).await {
        Err(TableError::RestoreMoved { reason, .. }) => assert!(reason.contains("orders"), "{reason}"),
        other => panic!("a round gathered on an old table committed: {other:?}"),
    }

    // c, told where the table stands, reads partition 2 again from there.
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let c2 = handoff(&f, "c", 2, &[(2, 10)], &[(2, 15)], 75..80).await;
    let round = gather(&meta, "orders", &[c2]).unwrap();
    assert_eq!(round.verdicts, vec![Verdict::Taken]);
    c.commit(&Append::new(round.files), &round.restore).await.unwrap();
    // Nothing new: a round of covered hand-offs moves nothing and is not committed.
    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    let again = handoff(&f, "c", 2, &[(2, 10)], &[(2, 15)], 200..201).await;
    let round = gather(&meta, "orders", &[again]).unwrap();
    assert_eq!(round.verdicts, vec![Verdict::Covered]);
    assert!(round.is_empty());
    assert!(round.files.is_empty());

    let meta = f.catalog.load(&f.ident).await.unwrap().metadata;
    assert_eq!(
        restore_point(&meta).unwrap().unwrap(),
        at(&[(0, 25), (1, 30), (2, 15), (3, 10)])
    );
    let view = f.read();
    for reader in ["pyiceberg", "duckdb"] {
        assert_eq!(ids_of(&view, reader), (0..80).collect::<Vec<_>>(), "{reader}");
    }
}
