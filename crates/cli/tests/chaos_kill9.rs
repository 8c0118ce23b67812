//! Seeded kill -9 chaos on the embedded default (SQLite catalog, local warehouse): random
//! SIGKILLs and crash points while records keep arriving, then no loss, no duplicate, every
//! dead letter once and the restore point at the end of every partition, read back by PyIceberg
//! and DuckDB. The rounds and the invariants are in `common/chaos.rs`.
//!
//! The seed is fixed (1) unless `CALVE_CHAOS_SEED=<seed>` (replay a failure with the seed it
//! printed) or `=random` says otherwise; set the number of kills with `CALVE_CHAOS_KILLS`
//! (default 20).

mod common;

use calve_testkit::broker::Broker;
use calve_testkit::calve::Setup;
use common::chaos::{chaos_contract, kill9_rounds};

#[test]
fn kill9_at_random_moments_loses_and_duplicates_nothing() {
    let seed = calve_testkit::seed("CALVE_CHAOS_SEED", 1);
    let kills = calve_testkit::env_count("CALVE_CHAOS_KILLS", 20);
    let broker = Broker::start();
    let s = Setup::new(&broker.bootstrap(), &chaos_contract());
    kill9_rounds(&broker.bootstrap(), &s, seed, kills);
}
