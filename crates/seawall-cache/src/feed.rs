//! The invalidation feed: each instance follows the Redis stream of
//! invalidations on a connection of its own (a blocking `XREAD` must not
//! hold up the shared one), applies other instances' entries to its L1,
//! and keeps a cursor. After a disconnection it replays what it missed from
//! the cursor on, or clears its L1 when the stream may no longer hold all
//! of it: when the stream was trimmed past the cursor, or when another
//! server now holds it (a failover promoted a replica, or the server
//! restarted), since Redis replicates and persists asynchronously and the
//! last entries may be gone with the old one. Only once it has replayed
//! does L1 answer reads again. A reader that stays connected but falls
//! more than the stream's length behind is caught too: after each batch it
//! reads (blocking, or replaying what it missed) it asks whether entries
//! past its cursor were trimmed, and clears L1 if so.
//! The same task sends invalidations that could not reach Redis once it
//! answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::prelude::{Client, ClientLike, EventInterface};
use fred::types::config::Options;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::inner::{Inner, Invalidation, now_ms};
use crate::stats::bump;

/// How long one `XREAD` blocks; the task notices a dropped cache within it.
const BLOCK: Duration = Duration::from_millis(1000);
/// How long the task waits after a failure before reconnecting.
const RETRY: Duration = Duration::from_millis(200);
/// How many entries one read asks for.
const BATCH: usize = 256;

/// A stream entry id, `<ms>-<seq>`.
type EntryId = (u64, u64);

fn parse_id(id: &str) -> Option<EntryId> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A command about `stream`, sent to the node that holds it: its first
/// argument is not the stream's name, so a Cluster client would otherwise
/// route it by that argument and be redirected on every call.
fn on_stream(name: &'static str, stream: &str, blocking: bool) -> CustomCommand {
    let slot = fred::util::redis_keyslot(stream.as_bytes());
    CustomCommand::new_static(name, ClusterHash::Custom(slot), blocking)
}

/// Follows the stream until the cache is dropped.
pub(crate) async fn follow(cache: Weak<Inner>, client: Client) {
    let mut cursor: Option<String> = None;
    let mut connection: Option<Client> = None;
    let mut cut_off = false;
    // The `run_id` of the server that held the stream when last read.
    let mut holder: Option<String> = None;
    // Set when the reader's connection came back by itself (fred reconnects
    // and may re-send the blocked read): the server behind it may be
    // another, so it is asked again.
    let reconnected = Arc::new(AtomicBool::new(false));
    loop {
        let Some(inner) = cache.upgrade() else { break };
        let Some(l2) = inner.l2.as_ref() else { break };
        let stream = l2.stream_key();
        let timeout = l2.timeout;
        let reader = match &connection {
            Some(reader) => reader.clone(),
            None => {
                let reader = client.clone_new();
                reader.connect();
                match tokio::time::timeout(
                    timeout.max(Duration::from_secs(1)),
                    reader.wait_for_connect(),
                )
                .await
                {
                    Ok(Ok(())) => {
                        // Only once connected: fred reports the first
                        // connection as a reconnection too, which would
                        // send a feed that missed nothing through a
                        // catch-up.
                        let flag = Arc::clone(&reconnected);
                        reader.on_reconnect(move |_| {
                            flag.store(true, Ordering::Relaxed);
                            async { Ok(()) }
                        });
                        connection = Some(reader.clone());
                        reader
                    }
                    _ => {
                        let _ = reader.quit().await;
                        drop(inner);
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                }
            }
        };
        if reconnected.swap(false, Ordering::Relaxed) && cursor.is_some() {
            cut_off = true;
        }
        let position = match &cursor {
            // At start: whatever L1 took before the cursor was set could
            // have been invalidated unseen, so it goes.
            None => match run_id(&reader, &stream, timeout).await {
                Ok(id) => {
                    holder = Some(id);
                    last_id(&reader, &stream, timeout).await.inspect(|_| {
                        inner.invalidate_local(&Invalidation::Clear);
                    })
                }
                Err(()) => Err(()),
            },
            Some(cursor) if cut_off => match run_id(&reader, &stream, timeout).await {
                Ok(id) if holder.as_ref().is_some_and(|held| *held != id) => {
                    // The new server's cursor first: only with it is the
                    // new server the one followed.
                    let position = last_id(&reader, &stream, timeout).await;
                    if position.is_ok() {
                        holder = Some(id);
                        inner.invalidate_local(&Invalidation::Clear);
                        bump(&inner.cache_counters.l1_clears);
                        tracing::warn!(
                            "another Redis server holds the invalidation stream now (a failover or a restart): L1 cleared"
                        );
                    }
                    position
                }
                Ok(_) => match catch_up(&inner, &reader, &stream, cursor, timeout).await {
                    // What was missed is applied before L1 answers again.
                    Ok(position) => replay(&inner, &reader, &stream, position, timeout).await,
                    Err(()) => Err(()),
                },
                Err(()) => Err(()),
            },
            Some(cursor) => Ok(cursor.clone()),
        };
        let position = match position {
            Ok(position) => position,
            Err(()) => {
                lost(&inner, &mut connection, &mut cut_off).await;
                drop(inner);
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        cursor = Some(position.clone());
        cut_off = false;
        inner.feed_connected.store(true, Ordering::Relaxed);
        inner.followed_at_ms.store(now_ms(), Ordering::Relaxed);
        // Do not keep the cache alive while blocked.
        drop(inner);
        let args = vec![
            "BLOCK".to_owned(),
            BLOCK.as_millis().to_string(),
            "COUNT".to_owned(),
            BATCH.to_string(),
            "STREAMS".to_owned(),
            stream.clone(),
            position.clone(),
        ];
        let options = Options {
            timeout: Some(BLOCK + timeout + Duration::from_secs(1)),
            ..Options::default()
        };
        let reader = reader.with_options(&options);
        let read = reader.custom::<Value, String>(on_stream("XREAD", &stream, true), args);
        match tokio::time::timeout(BLOCK + timeout, read).await {
            Ok(Ok(reply)) => {
                let Some(inner) = cache.upgrade() else { break };
                // Every entry up to this answer is in it: the stream was
                // followed until now.
                let answered_at = now_ms();
                let Some(last) = apply(&inner, entries(reply)) else {
                    inner.followed_at_ms.store(answered_at, Ordering::Relaxed);
                    continue;
                };
                // Entries between the cursor and this batch may have been
                // trimmed while this reader lagged; the cursor moves on only
                // once that is ruled out (or L1 is cleared).
                match missed_since(&reader, &stream, &position, timeout).await {
                    Ok(false) => {
                        inner.followed_at_ms.store(answered_at, Ordering::Relaxed);
                        cursor = Some(last);
                    }
                    Ok(true) => {
                        inner.invalidate_local(&Invalidation::Clear);
                        bump(&inner.cache_counters.l1_clears);
                        tracing::warn!(
                            "this instance fell further behind the invalidation stream than it keeps: L1 cleared"
                        );
                        inner.followed_at_ms.store(answered_at, Ordering::Relaxed);
                        cursor = Some(last);
                    }
                    Err(()) => {
                        lost(&inner, &mut connection, &mut cut_off).await;
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
            _ => {
                if let Some(inner) = cache.upgrade() {
                    lost(&inner, &mut connection, &mut cut_off).await;
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
    if let Some(reader) = connection {
        let _ = reader.quit().await;
    }
}

/// Marks the feed as cut off and drops its connection.
async fn lost(inner: &Inner, connection: &mut Option<Client>, cut_off: &mut bool) {
    inner.feed_connected.store(false, Ordering::Relaxed);
    *cut_off = true;
    if let Some(reader) = connection.take() {
        let _ = tokio::time::timeout(Duration::from_millis(100), reader.quit()).await;
    }
}

/// The `run_id` of the server that holds `stream` (on a Cluster, the primary
/// of its slot): a new one after a failover or a restart.
async fn run_id(reader: &Client, stream: &str, timeout: Duration) -> Result<String, ()> {
    let slot = fred::util::redis_keyslot(stream.as_bytes());
    let info = reader.custom::<String, String>(
        CustomCommand::new_static("INFO", ClusterHash::Custom(slot), false),
        vec!["server".to_owned()],
    );
    match tokio::time::timeout(timeout, info).await {
        Ok(Ok(text)) => text
            .lines()
            .find_map(|line| line.trim().strip_prefix("run_id:"))
            .map(str::to_owned)
            .ok_or(()),
        _ => Err(()),
    }
}

/// The id of the stream's last entry, `0-0` if it is empty.
async fn last_id(reader: &Client, stream: &str, timeout: Duration) -> Result<String, ()> {
    let args = vec![
        stream.to_owned(),
        "+".to_owned(),
        "-".to_owned(),
        "COUNT".to_owned(),
        "1".to_owned(),
    ];
    match tokio::time::timeout(
        timeout,
        reader.custom::<Value, String>(on_stream("XREVRANGE", stream, false), args),
    )
    .await
    {
        Ok(Ok(reply)) => Ok(entries(Value::Array(vec![Value::Array(vec![
            Value::from(""),
            reply,
        ])]))
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |(id, _, _)| id)),
        _ => Err(()),
    }
}

/// After a disconnection: the cursor to go on from if the stream still
/// holds every entry after it, else the stream's end with L1 cleared.
async fn catch_up(
    inner: &Inner,
    reader: &Client,
    stream: &str,
    cursor: &str,
    timeout: Duration,
) -> Result<String, ()> {
    if !missed_since(reader, stream, cursor, timeout).await? {
        return Ok(cursor.to_owned());
    }
    // The end first, then the clear: an entry added in between is read
    // after it, so nothing L1 takes after the clear escapes the feed.
    let end = last_id(reader, stream, timeout).await?;
    inner.invalidate_local(&Invalidation::Clear);
    bump(&inner.cache_counters.l1_clears);
    tracing::warn!("invalidations were missed beyond the stream's history: L1 cleared");
    Ok(end)
}

/// Applies every entry after `cursor` (other instances' only) until the
/// stream's end; returns the new cursor. The stream may be trimmed past
/// the cursor between [`catch_up`]'s look and a read here, so each batch
/// is followed by a look of its own, as the blocking read's is, and L1 is
/// cleared if entries went unread.
async fn replay(
    inner: &Inner,
    reader: &Client,
    stream: &str,
    mut cursor: String,
    timeout: Duration,
) -> Result<String, ()> {
    loop {
        let args = vec![
            "COUNT".to_owned(),
            BATCH.to_string(),
            "STREAMS".to_owned(),
            stream.to_owned(),
            cursor.clone(),
        ];
        let read = reader.custom::<Value, String>(on_stream("XREAD", stream, false), args);
        let batch = match tokio::time::timeout(timeout, read).await {
            Ok(Ok(reply)) => entries(reply),
            _ => return Err(()),
        };
        let full = batch.len() >= BATCH;
        if let Some(last) = apply(inner, batch) {
            if missed_since(reader, stream, &cursor, timeout).await? {
                inner.invalidate_local(&Invalidation::Clear);
                bump(&inner.cache_counters.l1_clears);
                tracing::warn!(
                    "the invalidation stream was trimmed past this instance while it caught up: L1 cleared"
                );
            }
            cursor = last;
        }
        if !full {
            return Ok(cursor);
        }
    }
}

/// Applies other instances' entries to L1 here; the last entry's id (an
/// entry that is no invalidation is passed over, not read again).
fn apply(inner: &Inner, batch: Vec<(String, Option<Invalidation>, String)>) -> Option<String> {
    let mut last = None;
    for (id, invalidation, from) in batch {
        if let Some(invalidation) = invalidation
            && from != inner.origin
        {
            inner.invalidate_local(&invalidation);
            bump(&inner.cache_counters.invalidations_received);
        }
        last = Some(id);
    }
    last
}

/// Whether entries after `cursor` may be gone from the stream: its first
/// entry is past the cursor (it is trimmed from its start, so entries past
/// the cursor went; at worst only the cursor's own entry did, and a clear
/// then costs hits, never correctness), or the stream itself is gone (a
/// restart without persistence lost it). From the start of an empty
/// stream (`0-0`), entries were missed if any was ever trimmed (Redis 7's
/// `entries-added` exceeds the length; before 7 nothing tells).
async fn missed_since(
    reader: &Client,
    stream: &str,
    cursor: &str,
    timeout: Duration,
) -> Result<bool, ()> {
    let cursor = parse_id(cursor).unwrap_or((0, 0));
    let info = reader.custom::<Value, String>(
        on_stream("XINFO", stream, false),
        vec!["STREAM".to_owned(), stream.to_owned()],
    );
    let reply = match tokio::time::timeout(timeout, info).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) if error.to_string().contains("no such key") => return Ok(cursor != (0, 0)),
        _ => return Err(()),
    };
    if cursor == (0, 0) {
        let number = |name| field(&reply, name).and_then(|value| value.as_u64());
        return Ok(matches!(
            (number("entries-added"), number("length")),
            (Some(added), Some(length)) if added > length
        ));
    }
    let first = match field(&reply, "recorded-first-entry-id") {
        Some(id) => id.into_string(),
        None => match field(&reply, "first-entry") {
            Some(Value::Array(mut entry)) if !entry.is_empty() => {
                entry.swap_remove(0).into_string()
            }
            _ => None,
        },
    };
    Ok(first
        .and_then(|id| parse_id(&id))
        .is_some_and(|first| first > cursor))
}

/// Sends invalidations that could not reach Redis: at once when one is
/// added, then every [`RETRY`] until Redis takes them all, so a write
/// answered while its key's server was out of reach is not read old
/// elsewhere for longer than that server takes to answer again. Runs
/// until the cache is dropped.
pub(crate) async fn resend(cache: Weak<Inner>, added: Arc<tokio::sync::Notify>) {
    loop {
        // A timeout, not only the wake: an addition while a send was
        // under way, or Redis answering again, has no wake of its own.
        let _ = tokio::time::timeout(RETRY, added.notified()).await;
        let Some(inner) = cache.upgrade() else { break };
        send_pending(&inner).await;
    }
}

/// Sends invalidations that could not reach Redis, now that it may answer.
async fn send_pending(inner: &Inner) {
    if !inner.has_pending() || inner.usable_l2().is_none() {
        return;
    }
    let (invalidations, overflowed) = {
        let mut pending = inner.pending.lock();
        if pending.invalidations.is_empty() && !pending.overflowed {
            return;
        }
        (
            std::mem::take(&mut pending.invalidations),
            std::mem::take(&mut pending.overflowed),
        )
    };
    let invalidations = if overflowed {
        vec![Invalidation::Clear]
    } else {
        invalidations
    };
    // Taken out, they are in flight, and still count as unsent (readiness
    // passes only once Redis has them) until each is acknowledged.
    inner.pending.lock().in_flight += invalidations.len();
    for (index, invalidation) in invalidations.iter().enumerate() {
        let sent = inner.invalidate_remote(invalidation).await.is_ok();
        let mut pending = inner.pending.lock();
        if sent {
            pending.in_flight = pending.in_flight.saturating_sub(1);
            continue;
        }
        let rest = &invalidations[index..];
        pending.in_flight = pending.in_flight.saturating_sub(rest.len());
        for rest in rest {
            if !pending.invalidations.contains(rest) {
                pending.invalidations.push(rest.clone());
            }
        }
        return;
    }
}

/// The value of `name` in a reply of field/value pairs (RESP2) or a map
/// (RESP3).
fn field(reply: &Value, name: &str) -> Option<Value> {
    match reply {
        Value::Array(items) => items
            .chunks_exact(2)
            .find(|pair| pair[0].as_str().is_some_and(|key| key == name))
            .map(|pair| pair[1].clone()),
        Value::Map(map) => map
            .clone()
            .inner()
            .into_iter()
            .find(|(key, _)| key.as_str() == Some(name))
            .map(|(_, value)| value),
        _ => None,
    }
}

/// The entries of an `XREAD` reply (one stream), as id, invalidation
/// (`None` for an entry that is none) and origin.
fn entries(reply: Value) -> Vec<(String, Option<Invalidation>, String)> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|stream| match stream {
                Value::Array(mut parts) if parts.len() == 2 => parts.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(map) => map.inner().into_values().collect(),
        _ => Vec::new(),
    };
    let mut found = Vec::new();
    for stream in streams {
        let Value::Array(items) = stream else {
            continue;
        };
        for item in items {
            let Value::Array(mut parts) = item else {
                continue;
            };
            if parts.len() != 2 {
                continue;
            }
            let fields = parts.pop();
            let Some(id) = parts.pop().and_then(Value::into_string) else {
                continue;
            };
            let Some(Value::Array(fields)) = fields else {
                continue;
            };
            let mut origin = String::new();
            let mut invalidation = None;
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                let (Some(name), Some(value)) = (name.into_string(), value.into_string()) else {
                    continue;
                };
                if name == "o" {
                    origin = value;
                } else {
                    invalidation = Invalidation::parse(&name, value);
                }
            }
            found.push((id, invalidation, origin));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use fred::interfaces::LuaInterface;

    use super::*;
    use crate::{Class, TieredCache};

    /// The race a reconnected feed meets: the catch-up found nothing
    /// missed from its cursor, then a burst trimmed the stream past it
    /// before the replay read on. The replay clears L1 rather than going
    /// on from what is left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_from_a_cursor_the_stream_was_trimmed_past_clears_l1() {
        let url = seawall_testkit::RedisServer::shared().url();
        let client = seawall_testkit::client::connect(&url, Duration::from_secs(2)).await;
        let prefix = seawall_testkit::unique_prefix();
        // No feed of its own: only the replay under test reads the stream.
        let cache = TieredCache::builder()
            .prefix(&prefix)
            .invalidation_history(20)
            .follow_invalidations(false)
            .redis(client.clone())
            .build()
            .expect("a cache");
        let stream = format!("{prefix}:inv");
        let add = "for i = 1, tonumber(ARGV[1]) do
              redis.call('XADD', KEYS[1], 'MAXLEN', '=', 20, '*', 'o', 'another-instance', 'k', 'other:' .. i)
            end
            return redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]";
        let cursor: String = client
            .eval(add, vec![stream.clone()], vec!["1"])
            .await
            .expect("an entry");
        cache
            .set("list", Class::SCHEDULE, "old".to_owned())
            .await
            .expect("set");
        let inner = &cache.inner;
        let clears = inner.cache_counters.l1_clears.load(Ordering::Relaxed);
        // What the catch-up saw: nothing missed from the cursor.
        assert_eq!(
            missed_since(&client, &stream, &cursor, Duration::from_secs(2)).await,
            Ok(false)
        );
        // The burst, past the history's 20 entries.
        let _: String = client
            .eval(add, vec![stream.clone()], vec!["150"])
            .await
            .expect("the burst");
        let end = replay(inner, &client, &stream, cursor, Duration::from_secs(2))
            .await
            .expect("replays");
        assert!(
            inner.cache_counters.l1_clears.load(Ordering::Relaxed) > clears,
            "L1 was not cleared"
        );
        assert_eq!(cache.get_local::<String>("list", Class::SCHEDULE), None);
        assert_eq!(
            last_id(&client, &stream, Duration::from_secs(2)).await,
            Ok(end)
        );
    }

    #[test]
    fn stream_ids_compare_by_time_then_sequence() {
        assert!(parse_id("5-1") > parse_id("4-9"));
        assert!(parse_id("5-10") > parse_id("5-9"));
        assert_eq!(parse_id("nope"), None);
    }
}
