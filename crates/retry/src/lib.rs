//! The one question every calve error answers for its caller: would trying again help?
//!
//! Each crate has its own `thiserror` enum; each implements [`Classify`], so the supervisor
//! (restart a table's pipeline or stop it loudly), the commit loop (retry a conflict) and
//! maintenance (skip a cycle or give up) decide the same way whatever layer failed. It is a
//! crate of its own because every other crate needs it and it needs nothing.

/// Whether retrying the failed operation could succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Retry with backoff (broker down, catalog unreachable, commit conflict).
    Temporary,
    /// Retrying will fail the same way until a person changes something.
    Permanent,
}

/// An error that knows its [`RetryClass`].
pub trait Classify {
    /// Whether retrying may help.
    fn class(&self) -> RetryClass;

    /// Shorthand for `class() == Temporary`.
    fn is_temporary(&self) -> bool {
        self.class() == RetryClass::Temporary
    }
}
