//! The invalidation feed: each instance follows the Redis stream of
//! invalidations on a connection of its own (a blocking `XREAD` must not
//! hold up the shared one), applies other instances' entries to its L1,
//! and keeps a cursor. After a disconnection it replays what it missed from
//! the cursor on, or clears its L1 when the stream may no longer hold all
//! of it: when the stream was trimmed past the cursor, or when another
//! server now holds it (a failover promoted a replica, or the server
//! restarted), since Redis replicates and persists asynchronously and the
//! last entries may be gone with the old one. The same task sends
//! invalidations that could not reach Redis once it answers again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::cmd;
use fred::prelude::{Client, ClientLike, EventInterface};
use fred::types::config::Options;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::cache::{Inner, Invalidation};
use crate::stats::bump;

/// How long one `XREAD` blocks; the task notices a dropped cache within it.
const BLOCK: Duration = Duration::from_millis(1000);
/// How long the task waits after a failure before reconnecting.
const RETRY: Duration = Duration::from_millis(200);

/// A stream entry id, `<ms>-<seq>`.
type EntryId = (u64, u64);

fn parse_id(id: &str) -> Option<EntryId> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
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
        send_pending(&inner).await;
        let reader = match &connection {
            Some(reader) => reader.clone(),
            None => {
                let reader = client.clone_new();
                let flag = Arc::clone(&reconnected);
                reader.on_reconnect(move |_| {
                    flag.store(true, Ordering::Relaxed);
                    async { Ok(()) }
                });
                reader.connect();
                match tokio::time::timeout(
                    timeout.max(Duration::from_secs(1)),
                    reader.wait_for_connect(),
                )
                .await
                {
                    Ok(Ok(())) => {
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
                Ok(_) => catch_up(&inner, &reader, &stream, cursor, timeout).await,
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
        let origin = inner.origin.clone();
        // Do not keep the cache alive while blocked.
        drop(inner);
        let args = vec![
            "BLOCK".to_owned(),
            BLOCK.as_millis().to_string(),
            "COUNT".to_owned(),
            "256".to_owned(),
            "STREAMS".to_owned(),
            stream,
            position,
        ];
        let options = Options {
            timeout: Some(BLOCK + timeout + Duration::from_secs(1)),
            ..Options::default()
        };
        let reader = reader.with_options(&options);
        let read = reader.custom::<Value, String>(cmd!("XREAD", blocking: true), args);
        match tokio::time::timeout(BLOCK + timeout, read).await {
            Ok(Ok(reply)) => {
                let Some(inner) = cache.upgrade() else { break };
                for (id, invalidation, from) in entries(reply) {
                    if from != origin {
                        inner.invalidate_local(&invalidation);
                        bump(&inner.cache_counters.invalidations_received);
                    }
                    cursor = Some(id);
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
        reader.custom::<Value, String>(cmd!("XREVRANGE"), args),
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
/// holds every entry after it, else a fresh start with L1 cleared.
async fn catch_up(
    inner: &Inner,
    reader: &Client,
    stream: &str,
    cursor: &str,
    timeout: Duration,
) -> Result<String, ()> {
    let info =
        reader.custom::<Value, String>(cmd!("XINFO"), vec!["STREAM".to_owned(), stream.to_owned()]);
    // The stream is trimmed from its start: when its first entry is past
    // the cursor, entries after the cursor may be gone (or, at worst, just
    // the ones up to it: a clear then costs hits, never correctness).
    let first = match tokio::time::timeout(timeout, info).await {
        Ok(Ok(reply)) => field(reply, "recorded-first-entry-id").and_then(|id| parse_id(&id)),
        // No stream: Redis lost it (a restart without persistence), and
        // with it every entry after the cursor.
        Ok(Err(error)) if error.to_string().contains("no such key") => Some((u64::MAX, u64::MAX)),
        _ => return Err(()),
    };
    let cursor_id = parse_id(cursor).unwrap_or((0, 0));
    if cursor_id != (0, 0) && first.is_some_and(|first| first > cursor_id) {
        inner.invalidate_local(&Invalidation::Clear);
        bump(&inner.cache_counters.l1_clears);
        tracing::warn!("invalidations were missed beyond the stream's history: L1 cleared");
        return last_id(reader, stream, timeout).await;
    }
    Ok(cursor.to_owned())
}

/// Sends invalidations that could not reach Redis, now that it may answer.
async fn send_pending(inner: &Inner) {
    if inner.usable_l2().is_none() {
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
    for (index, invalidation) in invalidations.iter().enumerate() {
        if inner.invalidate_remote(invalidation).await.is_err() {
            let mut pending = inner.pending.lock();
            for rest in &invalidations[index..] {
                if !pending.invalidations.contains(rest) {
                    pending.invalidations.push(rest.clone());
                }
            }
            return;
        }
    }
}

/// The value of `name` in a reply of field/value pairs (RESP2) or a map
/// (RESP3).
fn field(reply: Value, name: &str) -> Option<String> {
    match reply {
        Value::Array(items) => {
            let mut items = items.into_iter();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                if key.as_str().is_some_and(|key| key == name) {
                    return value.into_string();
                }
            }
            None
        }
        Value::Map(map) => map
            .inner()
            .into_iter()
            .find(|(key, _)| key.as_str() == Some(name))
            .and_then(|(_, value)| value.into_string()),
        _ => None,
    }
}

/// The entries of an `XREAD` reply (one stream), as id, invalidation and
/// origin; entries that are not invalidations are skipped.
fn entries(reply: Value) -> Vec<(String, Invalidation, String)> {
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
            if let Some(invalidation) = invalidation {
                found.push((id, invalidation, origin));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_by_time_then_sequence() {
        assert!(parse_id("5-1") > parse_id("4-9"));
        assert!(parse_id("5-10") > parse_id("5-9"));
        assert_eq!(parse_id("nope"), None);
    }
}
