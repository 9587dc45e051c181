//! Small per-thread integers, reused after a thread exits.
//!
//! Each recording thread owns one slot while it lives, and slot `n` owns shard
//! `n` of every series, so a shard has a single writer and recording needs no
//! atomic read-modify-write. A slot returns to the pool when its thread exits;
//! the next thread to take it continues in the same shards, which is safe
//! because the pool's mutex orders the old owner's last write before the new
//! owner's first.

use std::cell::Cell;
use std::sync::Mutex;

/// How many threads get a private shard; later threads share one overflow shard.
pub(crate) const PRIVATE_SLOTS: usize = 64;

/// The slot a thread that has none (or is being torn down) records through.
pub(crate) const SHARED_SLOT: usize = usize::MAX;

struct Pool {
    next: usize,
    free: Vec<usize>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    next: 0,
    free: Vec::new(),
});

/// Marks a thread that has not asked for a slot yet.
const UNASSIGNED: usize = usize::MAX - 1;

fn acquire() -> usize {
    let mut pool = POOL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Lowest free slot first, so a pool of N threads keeps using shards 0..N.
    if let Some(position) = pool
        .free
        .iter()
        .enumerate()
        .min_by_key(|(_, slot)| **slot)
        .map(|(i, _)| i)
    {
        return pool.free.swap_remove(position);
    }
    if pool.next < PRIVATE_SLOTS {
        pool.next += 1;
        pool.next - 1
    } else {
        SHARED_SLOT
    }
}

/// Returns the thread's slot to the pool when the thread exits.
struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        // From here on this thread records through the shared shard, so the
        // next owner of the slot is its only writer.
        let slot = CURRENT.replace(SHARED_SLOT);
        if slot < PRIVATE_SLOTS {
            let mut pool = POOL
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            pool.free.push(slot);
        }
    }
}

thread_local! {
    // A `const` cell without a destructor keeps the hot path to one TLS read;
    // `RELEASE` carries the destructor.
    static CURRENT: Cell<usize> = const { Cell::new(UNASSIGNED) };
    static RELEASE: Release = const { Release };
}

/// The calling thread's slot, or [`SHARED_SLOT`].
#[inline]
pub(crate) fn current() -> usize {
    let slot = CURRENT.get();
    if slot == UNASSIGNED { assign() } else { slot }
}

#[cold]
fn assign() -> usize {
    // Registering the destructor fails while the thread is being torn down;
    // such a thread records through the shared shard and never owns a slot.
    if RELEASE.try_with(|_| ()).is_err() {
        CURRENT.set(SHARED_SLOT);
        return SHARED_SLOT;
    }
    let slot = acquire();
    CURRENT.set(slot);
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_stable_within_a_thread_and_distinct_across_live_threads() {
        let mine = current();
        assert_eq!(mine, current());
        let (tx, rx) = std::sync::mpsc::channel();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = tx.send(current());
            let _ = hold_rx.recv();
        });
        let theirs = rx.recv().unwrap_or(SHARED_SLOT);
        assert!(mine == SHARED_SLOT || mine != theirs);
        let _ = hold_tx.send(());
        let _ = other.join();
    }

    #[test]
    fn slots_are_reused_after_a_thread_exits() {
        // Far more threads than private slots, one after another: without reuse
        // the later ones would fall through to the shared shard.
        for _ in 0..4 * PRIVATE_SLOTS {
            let slot = std::thread::spawn(current).join().unwrap_or(SHARED_SLOT);
            assert!(
                slot < PRIVATE_SLOTS,
                "a thread got no private slot: slots leak"
            );
        }
    }
}
