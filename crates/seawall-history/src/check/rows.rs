//! Matching rows that no `ok` answer names with the operations that may
//! have written them: sales and coupons share it.

use std::collections::HashMap;

use crate::history::{Op, Outcome};

/// What the operations of one (sale or campaign, user) left unaccounted:
/// how many `info` ones may still have written a row, and whether any
/// ended `fail`.
#[derive(Default)]
struct Unacknowledged {
    info: usize,
    failed: bool,
}

/// Where a row no `ok` names came from.
pub(super) enum Origin {
    /// An `info` operation of its (group, user) may have written it.
    Info,
    /// Every operation of its (group, user) that could have ended `fail`.
    Failed,
    /// No recorded operation of its (group, user) is left to have written it.
    Unrecorded,
}

/// The non-`ok` operations per (group, user), consumed one `info` per row.
pub(super) struct Origins(HashMap<(i64, i64), Unacknowledged>);

impl Origins {
    /// `key` picks an op's (group, user).
    pub(super) fn new<'a>(
        ops: impl Iterator<Item = &'a Op>,
        key: impl Fn(&Op) -> (i64, i64),
    ) -> Self {
        let mut origins: HashMap<(i64, i64), Unacknowledged> = HashMap::new();
        for op in ops {
            let entry = origins.entry(key(op)).or_default();
            match op.outcome {
                Outcome::Ok(_) => {}
                Outcome::Fail(_) => entry.failed = true,
                Outcome::Info(_) => entry.info += 1,
            }
        }
        Self(origins)
    }

    /// Where an unacknowledged row of (group, user) came from.
    pub(super) fn of(&mut self, group: i64, user: i64) -> Origin {
        match self.0.get_mut(&(group, user)) {
            Some(entry) if entry.info > 0 => {
                entry.info -= 1;
                Origin::Info
            }
            Some(entry) if entry.failed => Origin::Failed,
            _ => Origin::Unrecorded,
        }
    }
}
