//! The process's worker threads: one rayon pool, created once (by the binary, from
//! `--threads`) and shared by every plan through a cheap handle, so several plans and several
//! workers never start more threads than the cores they were given.

use std::sync::Arc;

/// A handle to the process's thread pool. Clones share the same threads.
///
/// A plan given a pool runs each call inside it ([`rayon::ThreadPool::install`]): the calling
/// thread waits while the pool's threads do the work, so any number of callers share the same
/// threads instead of each bringing its own. Without a pool, everything runs on the caller's
/// thread.
#[derive(Clone)]
pub struct Pool {
    threads: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads())
            .finish()
    }
}

/// Why the pool could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Zero threads were asked for.
    #[error("a thread pool needs at least one thread")]
    NoThreads,
    /// The operating system refused the threads.
    #[error("cannot start {threads} worker threads: {reason}")]
    Start {
        /// Threads asked for.
        threads: usize,
        /// The pool builder's message.
        reason: String,
    },
}

impl Pool {
    /// Starts `threads` worker threads (named `inflor-worker-{i}`).
    pub fn new(threads: usize) -> Result<Self, PoolError> {
        if threads == 0 {
            return Err(PoolError::NoThreads);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("inflor-worker-{i}"))
            .build()
            .map_err(|e| PoolError::Start {
                threads,
                reason: e.to_string(),
            })?;
        Ok(Self {
            threads: Arc::new(pool),
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads.current_num_threads()
    }

    /// Runs `f` inside the pool (so rayon's joins in it use the pool's threads) and returns
    /// its result; the calling thread waits.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.threads.install(f)
    }

    /// Whether two handles share the same threads.
    pub fn same(&self, other: &Pool) -> bool {
        Arc::ptr_eq(&self.threads, &other.threads)
    }
}

/// Runs `f` inside `pool` when there is one, else on the calling thread.
pub(crate) fn within<R: Send>(pool: Option<&Pool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_threads() {
        let pool = Pool::new(2).unwrap();
        let clone = pool.clone();
        assert!(pool.same(&clone));
        assert!(!pool.same(&Pool::new(1).unwrap()));
        assert_eq!(clone.threads(), 2);
        let name = clone.install(|| std::thread::current().name().map(str::to_owned));
        assert!(name.is_some_and(|n| n.starts_with("inflor-worker-")));
        assert_eq!(within(None, || 3), 3);
        assert_eq!(Pool::new(0).unwrap_err(), PoolError::NoThreads);
    }
}
