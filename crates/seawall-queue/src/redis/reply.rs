//! Reading the scripts' replies.

use std::collections::HashMap;

use fred::types::Value;

use crate::error::{Error, Result};
use crate::job::{AttemptError, Event, JobId, JobInfo, JobState, Progress, Tick, time_of};
use crate::store::{Lease, StoredScheduler, Taken, TicksAdded};

pub(super) fn array(value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(values) => Ok(values),
        Value::Null => Ok(Vec::new()),
        other => Err(Error::Protocol(format!("expected an array, got {other:?}"))),
    }
}

pub(super) fn text(value: &Value) -> Result<String> {
    value
        .as_string()
        .ok_or_else(|| Error::Protocol(format!("expected text, got {value:?}")))
}

pub(super) fn number(value: &Value) -> Result<i64> {
    value
        .as_i64()
        .or_else(|| value.as_string().and_then(|text| text.parse().ok()))
        .ok_or_else(|| Error::Protocol(format!("expected a number, got {value:?}")))
}

pub(super) fn count(value: &Value) -> Result<u32> {
    u32::try_from(number(value)?)
        .map_err(|_| Error::Protocol(format!("expected a count, got {value:?}")))
}

pub(super) fn unsigned(value: &Value) -> Result<u64> {
    u64::try_from(number(value)?)
        .map_err(|_| Error::Protocol(format!("expected a non-negative number, got {value:?}")))
}

fn bytes(value: Value) -> Vec<u8> {
    match value {
        Value::Bytes(bytes) => bytes.to_vec(),
        Value::String(text) => text.as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// One job of a fetch reply: id, token, payload, ready since, failures, max
/// attempts, backoff, timeout ms, stalls, run, context, trace context.
pub(super) fn taken(fields: &[Value]) -> Result<Taken> {
    Ok(Taken {
        lease: Lease {
            id: JobId::from(text(&fields[0])?),
            token: text(&fields[1])?,
        },
        payload: bytes(fields[2].clone()),
        ready_at_ms: unsigned(&fields[3])?,
        failures: count(&fields[4])?,
        max_attempts: count(&fields[5])?,
        backoff: text(&fields[6]).unwrap_or_default(),
        timeout_ms: unsigned(&fields[7])?,
        stalls: count(&fields[8])?,
        run: count(&fields[9])?,
        context: text(&fields[10]).unwrap_or_default(),
        // Answered only to a build that follows traces (`TRACED`).
        trace: fields
            .get(11)
            .and_then(|field| text(field).ok())
            .unwrap_or_default(),
    })
}

/// A job record from `HGETALL`; `None` when there is none.
pub(super) fn job_info(id: &JobId, reply: Value) -> Result<Option<JobInfo>> {
    let mut fields: HashMap<String, Value> = HashMap::new();
    match reply {
        Value::Map(map) => {
            for (key, value) in map.inner() {
                fields.insert(key.as_str().map(str::to_owned).unwrap_or_default(), value);
            }
        }
        other => {
            let mut values = array(other)?.into_iter();
            while let (Some(key), Some(value)) = (values.next(), values.next()) {
                fields.insert(text(&key)?, value);
            }
        }
    }
    if fields.is_empty() {
        return Ok(None);
    }
    let field_text = |name: &str| fields.get(name).and_then(Value::as_string);
    let field_number = |name: &str| {
        field_text(name)
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let small = |name: &str| u32::try_from(field_number(name)).unwrap_or(u32::MAX);
    let time = |name: &str| (field_number(name) > 0).then(|| time_of(field_number(name)));
    let state = field_text("s")
        .and_then(|state| JobState::parse(&state))
        .ok_or_else(|| Error::Protocol(format!("job {id} has no known state")))?;
    let progress = field_text("pp").map(|percent| Progress {
        percent: percent.parse().unwrap_or(0),
        message: field_text("pm").unwrap_or_default(),
    });
    let errors = match field_text("h") {
        Some(history) => serde_json::from_str::<Vec<AttemptError>>(&history)
            .map_err(|error| Error::Protocol(format!("job {id} history: {error}")))?,
        None => Vec::new(),
    };
    Ok(Some(JobInfo {
        id: id.clone(),
        state,
        payload: fields.get("d").cloned().map(bytes).unwrap_or_default(),
        priority: u8::try_from(field_number("p")).unwrap_or(u8::MAX),
        group: field_text("g").filter(|group| !group.is_empty()),
        failures: small("f"),
        stalls: small("st"),
        runs: small("tk"),
        max_attempts: small("ma"),
        created_at: time_of(field_number("ct")),
        ready_at: time_of(field_number("rt")),
        started_at: time("at"),
        finished_at: time("ft"),
        progress,
        errors,
        // `le` is the last error of any attempt; a dead job's is what
        // made it dead (make_dead in prelude/finish.lua).
        dead_reason: (state == JobState::Dead)
            .then(|| field_text("le"))
            .flatten()
            .filter(|reason| !reason.is_empty()),
        cancel_requested: field_text("cx").as_deref() == Some("1"),
        tick: field_text("sk").as_deref().and_then(Tick::parse),
        result: fields.get("rv").cloned().map(bytes),
        context: field_text("jc").filter(|context| !context.is_empty()),
    }))
}

/// Entries of `XRANGE`: `[position, [field, value, …]]` each. An entry
/// whose `j` lists several ids (a batch) gives one event per id, all at the
/// entry's position.
pub(super) fn stream_events(reply: Value) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for entry in array(reply)? {
        let mut entry = array(entry)?.into_iter();
        let position = text(&entry.next().unwrap_or(Value::Null))?;
        let mut values = array(entry.next().unwrap_or(Value::Null))?.into_iter();
        let (mut kind, mut jobs, mut fields) = (String::new(), String::new(), Vec::new());
        while let (Some(name), Some(value)) = (values.next(), values.next()) {
            let (name, value) = (text(&name)?, text(&value)?);
            match name.as_str() {
                "e" => kind = value,
                "j" => jobs = value,
                _ => fields.push((name, value)),
            }
        }
        for job in jobs.split(' ') {
            events.push(Event {
                position: position.clone(),
                kind: kind.clone(),
                job: JobId::from(job),
                fields: fields.clone(),
            });
        }
    }
    Ok(events)
}

/// The job an enqueue refused for an idempotency mismatch (its position
/// from 1), when the script answered `{ 'mismatch', n }`.
pub(super) fn mismatch(reply: &Value) -> Result<Option<usize>> {
    let Value::Array(values) = reply else {
        return Ok(None);
    };
    if values.len() != 2 || text(&values[0])? != "mismatch" {
        return Ok(None);
    }
    let index = number(&values[1])?;
    usize::try_from(index)
        .map(Some)
        .map_err(|_| Error::Protocol(format!("enqueue named job {index} as a mismatch")))
}

/// The ids an enqueue's answer says it added (flag 1).
pub(super) fn added_ids(reply: &Value) -> Result<Vec<String>> {
    if mismatch(reply)?.is_some() {
        return Ok(Vec::new());
    }
    let Value::Array(values) = reply else {
        return Err(Error::Protocol("enqueue answered no array".to_owned()));
    };
    values
        .chunks_exact(2)
        .filter_map(|pair| match number(&pair[1]) {
            Ok(1) => Some(text(&pair[0])),
            Ok(_) => None,
            Err(error) => Some(Err(error)),
        })
        .collect()
}

/// tick.lua's answer for `schedulers` schedulers: per scheduler, `-` when
/// its plan was stale, else how many jobs it made and their ids.
pub(super) fn tick_ids(reply: Value, schedulers: usize) -> Result<TicksAdded> {
    let words = array(reply)?;
    let mut words = words.iter();
    let mut out = Vec::with_capacity(schedulers);
    while let Some(word) = words.next() {
        let word = text(word)?;
        if word == "-" {
            out.push(None);
            continue;
        }
        let count: usize = word
            .parse()
            .map_err(|_| Error::Protocol(format!("the tick script answered {word:?}")))?;
        let ids = words
            .by_ref()
            .take(count)
            .map(|id| Ok(JobId::from(text(id)?)))
            .collect::<Result<Vec<_>>>()?;
        if ids.len() != count {
            return Err(Error::Protocol(
                "the tick script's answer ends early".to_owned(),
            ));
        }
        out.push(Some(ids));
    }
    if out.len() != schedulers {
        return Err(Error::Protocol(format!(
            "the tick script answered for {} schedulers of {schedulers}",
            out.len()
        )));
    }
    Ok(out)
}

/// An enqueue's answer: per job, its id and whether it was added.
pub(super) fn enqueued_ids(reply: Value) -> Result<Vec<(JobId, bool)>> {
    array(reply)?
        .chunks_exact(2)
        .map(|pair| Ok((JobId::from(text(&pair[0])?), number(&pair[1])? == 1)))
        .collect()
}

/// A scheduler's record as schedule.lua answers it: id, schedule,
/// template, revision, next, paused, last tick, last job, previous tick,
/// previous job, when a runner looks at it next (0: paused), when its
/// schedule last changed or it was resumed (0: not known).
pub(super) fn stored_scheduler(reply: Value) -> Result<StoredScheduler> {
    let fields = array(reply)?;
    let [
        id,
        schedule,
        template,
        revision,
        next,
        paused,
        last_tick,
        last_job,
        previous_tick,
        previous_job,
        due,
        from,
    ] = <[Value; 12]>::try_from(fields).map_err(|fields| {
        Error::Protocol(format!("a scheduler's record has {} fields", fields.len()))
    })?;
    let run = |tick: &Value, job: &Value| -> Result<Option<(u64, JobId)>> {
        let job = text(job)?;
        if job.is_empty() {
            return Ok(None);
        }
        Ok(Some((unsigned(tick)?, JobId::from(job))))
    };
    Ok(StoredScheduler {
        id: text(&id)?,
        schedule: text(&schedule)?,
        template: bytes(template),
        revision: unsigned(&revision)?,
        next_ms: unsigned(&next)?,
        paused: text(&paused)? == "1",
        last: run(&last_tick, &last_job)?,
        previous: run(&previous_tick, &previous_job)?,
        due_ms: unsigned(&due)?,
        from_ms: unsigned(&from)?,
    })
}
