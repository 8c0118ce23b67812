//! Where background maintenance runs: worker threads of its own, apart from the runtime that
//! polls Kafka and commits.
//!
//! A compaction reads, sorts and encodes whole partitions, and the iceberg writer's local file
//! IO is blocking `std::fs` with fsync: long stretches in which its future never yields. On
//! the ingest runtime (one worker per core) two such cycles leave no worker to poll another
//! table's consumer or commit its band, and a table on a 1 s band misses it for as long as the
//! compactions last (`calve-bench isolation` measures it). Here maintenance gets its own
//! workers, at a lower CPU priority so that ingestion wins a contended core, and at most one
//! cycle per worker holds a compaction's memory at a time.
//!
//! The runtime lives as long as the process: connections the catalog or the object store open
//! from it (sqlx and HTTP pools) are shared with the ingest runtime and must not die under it.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::error::ServiceError;

/// How much nicer than the process maintenance threads are: ingestion gets about nine tenths
/// of a core both want, and maintenance still runs on any idle core.
const NICER_BY: i32 = 10;
/// The nicest a Linux thread can be.
const NICEST: i32 = 19;

/// The process's maintenance workers and the permits for concurrent cycles.
pub struct MaintenanceThreads {
    runtime: Runtime,
    cycles: Arc<Semaphore>,
    threads: usize,
}

static THREADS: OnceLock<MaintenanceThreads> = OnceLock::new();

impl MaintenanceThreads {
    /// The process's maintenance threads, started by the first caller with `threads` workers
    /// (later callers share them: one `calve run` per process asks once).
    pub fn get(threads: usize) -> Result<&'static MaintenanceThreads, ServiceError> {
        if let Some(t) = THREADS.get() {
            if t.threads != threads {
                tracing::debug!(
                    running = t.threads,
                    asked = threads,
                    "maintenance threads already started"
                );
            }
            return Ok(t);
        }
        let threads = threads.max(1);
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("calve-maintain")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| ServiceError::Config(format!("cannot start the maintenance threads: {e}")))?;
        let started = MaintenanceThreads {
            runtime,
            cycles: Arc::new(Semaphore::new(threads)),
            threads,
        };
        // A racing caller's runtime is dropped here, outside any runtime, which tokio allows
        // only from a thread that is not a worker: shut it down in the background instead.
        if let Err(lost) = THREADS.set(started) {
            lost.runtime.shutdown_background();
        }
        Ok(THREADS.get().expect("set above"))
    }

    /// Runs `task` on the maintenance workers.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(task)
    }

    /// The permits one cycle takes before it starts (as many as there are workers).
    pub fn cycles(&self) -> Arc<Semaphore> {
        self.cycles.clone()
    }

    /// The handle of the maintenance runtime (for tests that ask where work ran).
    pub fn handle(&self) -> &Handle {
        self.runtime.handle()
    }
}

/// Waits for a cycle permit from `cycles`.
pub(crate) async fn cycle_permit(cycles: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    cycles.clone().acquire_owned().await.ok()
}

/// This thread's niceness (a new thread starts with its creator's).
#[cfg(target_os = "linux")]
fn niceness() -> i32 {
    // SAFETY: getpriority takes no pointers; on Linux `who = 0` names the calling thread.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

fn lower_priority() {
    // On Linux each thread has its own niceness. Failing to lower it (a seccomp profile) only
    // costs the preference, so it is not an error.
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes no pointers; it changes only this thread's scheduling weight.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, (niceness() + NICER_BY).min(NICEST));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_runs_on_its_own_lower_priority_threads() {
        // The runtime's threads are started from this one, so they inherit its niceness.
        let here = niceness();
        let t = MaintenanceThreads::get(1).unwrap();
        let (name, nice) = t
            .handle()
            .block_on(t.spawn(async { (std::thread::current().name().map(str::to_string), niceness()) }))
            .unwrap();
        assert_eq!(name.as_deref(), Some("calve-maintain"));
        assert_eq!(nice, (here + NICER_BY).min(NICEST));
        assert_eq!(t.cycles().available_permits(), t.threads);
    }
}
