//! Writer schemas for the records a poll brought: learnt from the schema registry, which
//! may be slow or down — an infrastructure problem the table waits out, never the records'.

use std::time::{Duration, Instant};

use calve_ingest::registry::{Fetched, Registry};
use calve_ingest::KafkaRecord;
use calve_retry::Classify;
use tokio::sync::watch;

use super::Pipeline;
use crate::error::ServiceError;

/// Longest pause between two asks of a registry that cannot answer.
const REGISTRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How many times the registry must say it lacks a schema id before calve believes it.
const UNKNOWN_CONFIRMATIONS: u32 = 3;
/// How long a registry may fail before each further failure is logged as an error.
const REGISTRY_LOUD_AFTER: Duration = Duration::from_secs(30);

impl Pipeline {
    /// Looks up the writer schemas `records` carry that the router has not learnt. A registry
    /// that cannot answer is an infrastructure problem, never the records': what is buffered
    /// is committed, then the table waits (the records stay unrouted, so a restart reads them
    /// again), asking again with backoff and logging louder the longer it lasts. `false` when
    /// shutdown came while waiting.
    pub(super) async fn learn_schemas(
        &mut self,
        records: &[KafkaRecord],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, ServiceError> {
        let ids = self.router.schemas_needed(records);
        let Some(registry) = self.registry.clone().filter(|_| !ids.is_empty()) else {
            return Ok(true);
        };
        for id in ids {
            let Some(fetched) = self.ask_registry(&registry, id, shutdown).await? else {
                return Ok(false);
            };
            let table = &self.contract.table.name;
            match &fetched {
                Fetched::Found(_) => tracing::info!(table, schema_id = id, "learnt a writer schema"),
                Fetched::Unknown(reason) => {
                    tracing::warn!(table, schema_id = id, %reason, "records carry a schema id calve cannot read; they go to the dead-letter table")
                }
            }
            // A schema calve cannot read (one that does not compile, references it cannot
            // make whole) is calve's limit, not the records' fault: the table stops, loudly,
            // rather than dead-letter a topic of good records.
            if let Err(what) = self.router.learn_schema(id, &fetched) {
                return Err(ServiceError::Unsupported {
                    table: table.clone(),
                    what,
                });
            }
        }
        Ok(true)
    }

    /// Asks the registry for schema `id` until it answers (`None`: shutdown came first). An id
    /// the registry says it lacks is asked about again a few times, a second apart, before it
    /// is believed: a replica may not have the schema a producer registered a moment ago.
    async fn ask_registry(
        &mut self,
        registry: &Registry,
        id: u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Fetched>, ServiceError> {
        let table = self.contract.table.name.clone();
        let (mut failing, mut unknown): (Option<(Instant, Duration)>, u32) = (None, 0);
        loop {
            let answer = tokio::select! {
                _ = shutdown.changed() => return Ok(None),
                answer = registry.schema(id) => answer,
            };
            let pause = match answer {
                Ok(Fetched::Unknown(_)) if unknown + 1 < UNKNOWN_CONFIRMATIONS => {
                    unknown += 1;
                    Duration::from_secs(1)
                }
                Ok(fetched) => {
                    if let Some((since, _)) = failing {
                        let waited_ms = since.elapsed().as_millis() as u64;
                        tracing::info!(
                            table,
                            schema_id = id,
                            waited_ms,
                            "the schema registry answers again; resuming"
                        );
                    }
                    return Ok(Some(fetched));
                }
                Err(e) if !e.is_temporary() => return Err(e.into()),
                Err(err) => {
                    let (since, pause) = match failing {
                        None => {
                            tracing::warn!(table, schema_id = id, error = %err, "the schema registry cannot answer; the table waits for it (no record is dead-lettered for it)");
                            self.flush().await?;
                            (Instant::now(), Duration::from_millis(250))
                        }
                        Some((since, pause)) => {
                            if since.elapsed() >= REGISTRY_LOUD_AFTER {
                                tracing::error!(
                                    table, schema_id = id, error = %err, waited_s = since.elapsed().as_secs(),
                                    "the schema registry still cannot answer; the table is stalled until it does"
                                );
                            }
                            (since, (pause * 2).min(REGISTRY_BACKOFF_MAX))
                        }
                    };
                    failing = Some((since, pause));
                    pause
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return Ok(None),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
