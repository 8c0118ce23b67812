//! Storage failures only a person can clear — a full disk, a refused permission, a read-only
//! mount — told apart from everything else that can fail while writing.
//!
//! They are retried like any temporary failure (the table reopens from its restore point once
//! the disk has room again, so nothing is lost), but they must not read like one: an operator
//! paged at 3 a.m. needs "the disk under the warehouse is full", not "iceberg: Unexpected".
//! The cause sits at the bottom of a chain of wrappers (iceberg, OpenDAL, std::io), so the
//! chain is walked; where a layer kept only text, its message is read.

use std::fmt;

/// What is wrong with the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// No space left on the device, or a disk quota reached.
    Full,
    /// The operating system or the object store refused access.
    Denied,
    /// The file system is mounted read-only.
    ReadOnly,
}

impl fmt::Display for StorageFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageFault::Full => "STORAGE FULL (no space left on the device, or a quota reached)",
            StorageFault::Denied => "STORAGE ACCESS DENIED (permissions)",
            StorageFault::ReadOnly => "STORAGE READ-ONLY",
        })
    }
}

/// What each fault reads like where only the text survived: std's own messages (with the
/// `os error N` they end in) and the object stores' refusals.
const SIGNS: &[(&str, StorageFault)] = &[
    ("No space left on device", StorageFault::Full),
    ("(os error 28)", StorageFault::Full),
    ("Disk quota exceeded", StorageFault::Full),
    ("(os error 122)", StorageFault::Full),
    // SQLite, whose catalog database may share the full disk.
    ("database or disk is full", StorageFault::Full),
    ("Read-only file system", StorageFault::ReadOnly),
    ("(os error 30)", StorageFault::ReadOnly),
    ("Permission denied", StorageFault::Denied),
    ("(os error 13)", StorageFault::Denied),
    ("PermissionDenied", StorageFault::Denied),
    ("AccessDenied", StorageFault::Denied),
];

impl StorageFault {
    /// The fault at the bottom of `error`'s chain, if it is one.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Option<StorageFault> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(fault) = e.downcast_ref::<std::io::Error>().and_then(Self::of_io) {
                return Some(fault);
            }
            if let Some(fault) = Self::of_text(&e.to_string()) {
                return Some(fault);
            }
            next = e.source();
        }
        None
    }

    /// The fault an error message describes, if it describes one.
    pub fn of_text(text: &str) -> Option<StorageFault> {
        SIGNS.iter().find(|(sign, _)| text.contains(sign)).map(|(_, f)| *f)
    }

    fn of_io(e: &std::io::Error) -> Option<StorageFault> {
        use std::io::ErrorKind;
        match e.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Some(StorageFault::Full),
            ErrorKind::PermissionDenied => Some(StorageFault::Denied),
            ErrorKind::ReadOnlyFilesystem => Some(StorageFault::ReadOnly),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_found_at_the_bottom_of_a_chain_and_in_text() {
        let io = std::io::Error::from_raw_os_error(28);
        let wrapped = iceberg::Error::new(iceberg::ErrorKind::Unexpected, "write failed").with_source(io);
        assert_eq!(StorageFault::of(&wrapped), Some(StorageFault::Full));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(StorageFault::of(&denied), Some(StorageFault::Denied));
        assert_eq!(
            StorageFault::of_text("redb: Read-only file system (os error 30)"),
            Some(StorageFault::ReadOnly)
        );
        let other = iceberg::Error::new(iceberg::ErrorKind::Unexpected, "connection reset");
        assert_eq!(StorageFault::of(&other), None);
    }
}
