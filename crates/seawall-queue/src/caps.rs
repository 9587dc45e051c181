//! The limits every store holds a call to, in one table: the Redis
//! scripts get them as Lua definitions ahead of their prelude
//! ([`lua_definitions`]), and the memory store checks the same constants,
//! so that neither accepts what the other refuses. It imports nothing of
//! the crate: every module may read it.

/// The longest group or idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The longest [context](crate::JobOptions::context), in bytes.
pub const MAX_CONTEXT_BYTES: usize = 256;
/// The largest payload a job may carry once encoded, in bytes (8 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 8 << 20;
/// The most missed ticks [`Missed::Each`](crate::Missed::Each) makes jobs
/// for.
pub const MAX_CATCH_UP: u32 = 1_000;
/// The most jobs one flow holds.
pub const MAX_FLOW_JOBS: usize = 1_000;

/// The longest duration an argument may carry, in ms (366 days).
pub(crate) const MAX_MS: u64 = 366 * 24 * 3600 * 1000;
/// The largest count or retention setting (2^40, and as many ms, about 34
/// years): far inside what a Lua number holds exactly, and inside what
/// `SET … PX` accepts.
pub(crate) const MAX_SETTING: u64 = 1 << 40;
/// The longest error or progress message a script keeps, in bytes (the
/// client cuts its own at 4 KiB).
pub(crate) const MAX_MESSAGE: usize = 8192;
/// The most ticks of one scheduler one call enqueues: every tick
/// [`Missed::Each`](crate::Missed::Each) catches up, and the tick to come,
/// enqueued ahead.
pub(crate) const MAX_TICKS: usize = MAX_CATCH_UP as usize + 1;
/// The longest trace context stored with a job: a `traceparent` (55), its
/// mode and separators, and a `tracestate` of up to 512 bytes.
pub(crate) const MAX_TRACE: usize = 600;

/// Each cap as the scripts name it, and its value.
const CAPS: [(&str, u64); 9] = [
    ("MAX_MS", MAX_MS),
    ("MAX_SETTING", MAX_SETTING),
    ("MAX_MESSAGE", MAX_MESSAGE as u64),
    ("MAX_PAYLOAD", MAX_PAYLOAD_BYTES as u64),
    ("MAX_TICKS", MAX_TICKS as u64),
    ("MAX_TRACE", MAX_TRACE as u64),
    ("MAX_CONTEXT", MAX_CONTEXT_BYTES as u64),
    ("MAX_KEY", MAX_KEY_BYTES as u64),
    ("MAX_FLOW_JOBS", MAX_FLOW_JOBS as u64),
];

/// The caps as top-level Lua definitions (`local MAX_MS = 31622400000`),
/// one a line, to go ahead of the scripts' prelude.
pub(crate) fn lua_definitions() -> String {
    let mut text = String::from("-- The caps every store holds a call to (caps.rs).\n");
    for (name, value) in CAPS {
        text.push_str(&format!("local {name} = {value}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cap is exact as a Lua number (a double), and none is defined
    /// again in a script with a value of its own.
    #[test]
    fn the_scripts_take_their_caps_from_the_table_alone() {
        for (name, value) in CAPS {
            assert!(value < 1 << 53, "{name}");
        }
        for (file, text) in crate::redis::PRELUDE
            .iter()
            .chain(&crate::redis::SCRIPT_SOURCES)
        {
            for (name, _) in CAPS {
                assert!(
                    !text.contains(&format!("local {name} =")),
                    "{file} defines {name} again"
                );
            }
        }
        assert!(lua_definitions().contains("local MAX_TICKS = 1001\n"));
    }
}
