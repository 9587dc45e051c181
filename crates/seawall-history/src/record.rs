//! Writing a history: one JSON line per event, appended under a lock by
//! any number of threads or tasks.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::event::{Event, EventType, Workload};

/// A history file being written. Cheap to clone; every clone writes to the
/// same file, and ids stay unique across them. The file is flushed when the
/// last clone is dropped (and by [`Recorder::flush`]).
///
/// Times never go backwards within one recorder, even if the wall clock
/// does, so a completion is never earlier than its invoke.
#[derive(Clone)]
pub struct Recorder(Arc<Inner>);

struct Inner {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
    next_id: AtomicU64,
    last_t: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Nobody is left to tell; a failed flush shows as a truncated file.
        let _ = self.out.get_mut().flush();
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.0.path)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Creates (or truncates) the history file at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let file = File::create(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self(Arc::new(Inner {
            path,
            out: Mutex::new(BufWriter::new(file)),
            next_id: AtomicU64::new(0),
            last_t: AtomicU64::new(0),
        })))
    }

    /// The file this recorder writes.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Records that `process` is about to send a request of `workload`
    /// (`op` and its inputs in `value`, see the crate docs for their
    /// shapes). Complete the returned handle with what the answer said;
    /// a handle dropped without completion records `info`.
    pub fn invoke(
        &self,
        process: &str,
        workload: Workload,
        op: &str,
        value: serde_json::Value,
    ) -> Result<OpHandle> {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        self.write(&Event {
            t: self.now(),
            process: process.to_owned(),
            kind: EventType::Invoke,
            id: Some(id),
            workload: Some(workload),
            op: op.to_owned(),
            value,
        })?;
        Ok(OpHandle {
            recorder: self.clone(),
            id,
            process: process.to_owned(),
            workload,
            op: op.to_owned(),
            done: false,
        })
    }

    /// Records a fault of the nemesis: `op` is `partition`, `kill`, …,
    /// `value` its targets (`{"host": "worker-1"}`).
    pub fn fault(&self, op: &str, value: serde_json::Value) -> Result<()> {
        self.write(&Event {
            t: self.now(),
            process: "nemesis".to_owned(),
            kind: EventType::Fault,
            id: None,
            workload: None,
            op: op.to_owned(),
            value,
        })
    }

    /// Writes what is buffered to the file.
    pub fn flush(&self) -> Result<()> {
        self.0
            .out
            .lock()
            .flush()
            .map_err(|source| self.error(source))
    }

    /// Microseconds since the epoch, never less than the last time taken.
    fn now(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
            });
        let before = self.0.last_t.fetch_max(wall, Ordering::Relaxed);
        wall.max(before)
    }

    fn write(&self, event: &Event) -> Result<()> {
        let mut line =
            serde_json::to_vec(event).map_err(|error| self.error(std::io::Error::other(error)))?;
        line.push(b'\n');
        self.0
            .out
            .lock()
            .write_all(&line)
            .map_err(|source| self.error(source))
    }

    fn error(&self, source: std::io::Error) -> Error {
        Error::Record {
            path: self.0.path.clone(),
            source,
        }
    }
}

/// An operation invoked and not yet completed. Complete it with
/// [`ok`](Self::ok), [`fail`](Self::fail) or [`info`](Self::info); dropping
/// it records `info` with `{"dropped": true}` (the task was cancelled, so
/// nobody knows what the request did).
#[derive(Debug)]
#[must_use = "complete the operation with ok, fail or info"]
pub struct OpHandle {
    recorder: Recorder,
    id: u64,
    process: String,
    workload: Workload,
    op: String,
    done: bool,
}

impl OpHandle {
    /// The operation's id in its file.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records that the request succeeded; `value` is what the answer said.
    pub fn ok(self, value: serde_json::Value) -> Result<()> {
        self.complete(EventType::Ok, value)
    }

    /// Records that the request certainly did nothing.
    pub fn fail(self, value: serde_json::Value) -> Result<()> {
        self.complete(EventType::Fail, value)
    }

    /// Records that nobody knows whether the request took effect.
    pub fn info(self, value: serde_json::Value) -> Result<()> {
        self.complete(EventType::Info, value)
    }

    fn complete(mut self, kind: EventType, value: serde_json::Value) -> Result<()> {
        self.done = true;
        self.record(kind, value)
    }

    fn record(&self, kind: EventType, value: serde_json::Value) -> Result<()> {
        self.recorder.write(&Event {
            t: self.recorder.now(),
            process: self.process.clone(),
            kind,
            id: Some(self.id),
            workload: Some(self.workload),
            op: self.op.clone(),
            value,
        })
    }
}

impl Drop for OpHandle {
    fn drop(&mut self) {
        if !self.done {
            // A drop cannot report a failure; the op then reads as pending,
            // which the checker treats as info all the same.
            let _ = self.record(EventType::Info, serde_json::json!({"dropped": true}));
        }
    }
}
