//! Commit duty shared by several `calve run` processes (`[group]` in `calve.toml`): which of
//! the contracts' tables this process commits. Each table is committed by exactly one process
//! at a time, the one the Kafka consumer group gives the table's duty partition
//! ([`calve_ingest::DutyGroup`]); the others stand by and take it over when that process dies,
//! leaves or a new one joins. A handover needs nothing from the process handing over: the new
//! owner claims the table (its writer epoch fences any late commit of the old one) and reads on
//! from the table's restore point.

use std::collections::BTreeSet;
use std::time::Duration;

use calve_contract::{Contract, HumanDuration};
use calve_ingest::{DutyGroup, GroupSettings, KafkaConfig, Share};
use serde::Deserialize;
use tokio::sync::watch;

use crate::error::ServiceError;

/// `[group]` in `calve.toml`: share the tables with every `calve run` that names the same
/// `[kafka] group_id` and runs the same contracts. Without it, this process commits every
/// table itself (and a second process fences it table by table).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// The duty topic: one partition per table, never written to (default
    /// `<group_id>.duty`; made on first start with at least 64 partitions).
    pub topic: Option<String>,
    /// A process not heard from this long loses its tables to the others (default "10s";
    /// brokers accept 6 s to 5 min by default). Shorter hands a dead process's tables over
    /// sooner; a process that stalls longer (a long GC-free pause is rare, a frozen VM is
    /// not) is fenced and reopens.
    pub session_timeout: HumanDuration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            topic: None,
            session_timeout: HumanDuration(Duration::from_secs(10)),
        }
    }
}

/// This process's share of the tables.
pub struct Duty {
    /// Table names in duty-partition order.
    tables: Vec<String>,
    share: watch::Receiver<Share>,
    /// Keeps the membership (leaving the group when dropped).
    _group: DutyGroup,
}

impl Duty {
    /// Joins the group for `contracts`' tables. Table `i` in name order has duty partition
    /// `i`, so every process of the group must run the same contracts.
    pub async fn join(kafka: &KafkaConfig, cfg: &GroupConfig, contracts: &[Contract]) -> Result<Self, ServiceError> {
        let mut tables: Vec<String> = contracts.iter().map(|c| c.table.name.clone()).collect();
        tables.sort();
        let settings = GroupSettings {
            topic: cfg.topic.clone().unwrap_or_else(|| format!("{}.duty", kafka.group_id)),
            group: format!("{}.duty", kafka.group_id),
            partitions: tables.len() as i32,
            session_timeout: cfg.session_timeout.0,
        };
        let group = DutyGroup::join(kafka, &settings).await?;
        tracing::info!(
            topic = %settings.topic, group = %settings.group, tables = tables.len(),
            "joined the group sharing the tables' commit duty"
        );
        Ok(Duty {
            tables,
            share: group.share(),
            _group: group,
        })
    }

    /// Rebalances this process has been through: a change means a table's duty may have left
    /// and come back meanwhile.
    pub fn generation(&self) -> u64 {
        self.share.borrow().generation
    }

    /// Waits until the group gives `table` to this process (`Ok(true)`) or `shutdown` turns
    /// true (`Ok(false)`). Fails when the membership ended under it.
    pub async fn until_owned(&self, table: &str, shutdown: &mut watch::Receiver<bool>) -> Result<bool, ServiceError> {
        let mut share = self.share.clone();
        loop {
            if *shutdown.borrow() {
                return Ok(false);
            }
            if owns(&self.tables, &share.borrow_and_update().partitions, table) {
                return Ok(true);
            }
            tokio::select! {
                r = share.changed() => if r.is_err() { return Err(membership_ended()) },
                r = shutdown.changed() => if r.is_err() { return Ok(false) },
            }
        }
    }

    /// Waits until the group's word changes after `generation` (`true`), `timeout` passes or
    /// `shutdown` turns true (`false`).
    pub async fn changed_since(
        &self,
        generation: u64,
        timeout: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut share = self.share.clone();
        let wait = async {
            loop {
                if share.borrow_and_update().generation != generation {
                    return true;
                }
                if share.changed().await.is_err() {
                    return false;
                }
            }
        };
        // A change already made is the answer, whatever else is ready.
        tokio::select! {
            biased;
            changed = wait => changed,
            _ = tokio::time::sleep(timeout) => false,
            _ = shutdown.changed() => false,
        }
    }

    /// A shutdown signal for `table`'s pipeline: it turns true with `shutdown`, or when the
    /// group takes the table from this process. The watching task ends with the signal.
    pub fn while_owned(&self, table: &str, mut shutdown: watch::Receiver<bool>) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let (tables, mut share, table) = (self.tables.clone(), self.share.clone(), table.to_string());
        tokio::spawn(async move {
            loop {
                if *shutdown.borrow_and_update() {
                    break;
                }
                if !owns(&tables, &share.borrow_and_update().partitions, &table) {
                    tracing::info!(%table, "the group gave the table's commit duty to another process: handing it over");
                    break;
                }
                tokio::select! {
                    r = share.changed() => if r.is_err() { break },
                    r = shutdown.changed() => if r.is_err() { break },
                    _ = tx.closed() => return,
                }
            }
            let _ = tx.send(true);
            // The pipeline reads the signal until it has flushed; it drops it then.
            tx.closed().await;
        });
        rx
    }
}

fn membership_ended() -> ServiceError {
    ServiceError::Config("the membership in the group sharing the tables ended".into())
}

/// Whether `assigned` holds `table`'s duty partition (its place in `tables`).
fn owns(tables: &[String], assigned: &Option<BTreeSet<i32>>, table: &str) -> bool {
    let Some(assigned) = assigned else {
        return false;
    };
    tables
        .iter()
        .position(|t| t == table)
        .is_some_and(|i| assigned.contains(&(i as i32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_owned_through_its_place_in_name_order() {
        let tables = vec!["crm.customers".to_string(), "shop.orders".to_string()];
        let share = Some(BTreeSet::from([1]));
        assert!(owns(&tables, &share, "shop.orders"));
        assert!(!owns(&tables, &share, "crm.customers"));
        assert!(
            !owns(&tables, &None, "shop.orders"),
            "nothing before the first assignment"
        );
        assert!(!owns(&tables, &share, "other.table"));
    }
}
