//! Group commit on a SQLite file: write jobs that queued while the previous
//! group committed are written in one transaction, each answered once its
//! group is committed.
//!
//! SQLite admits one writer at a time, and every transaction costs its
//! `BEGIN`, its `COMMIT` and a round trip to the connection's thread per
//! statement; with a hundred concurrent writers they queue for the one
//! write connection. A group pays the transaction once for all its jobs:
//! the same effects as one transaction per job, in arrival order. On
//! PostgreSQL, which locks rows rather than the database, each job is
//! written on its own, in as few round trips as it can be atomic in.
//!
//! A job reads what it needs and decides before it writes (inside the
//! group's transaction it sees every earlier job's writes), so a refusal
//! writes nothing; a statement that fails fails the whole group, and every
//! job in it is answered with that error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use crate::db::Db;

/// The most jobs one group commit writes.
const MAX_GROUP: usize = 64;
/// Jobs waiting for the writer before senders wait for room.
const QUEUE: usize = 1024;

/// What a job's statements came to: its output, or the group's error.
pub(crate) type Written<T> = Result<T, Arc<sqlx::Error>>;

/// A boxed future borrowing the connection.
pub(crate) type WriteFuture<'c, T> =
    Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// One job's statements, run in a transaction it may share.
pub(crate) trait GroupJob: Send + Sync + 'static {
    /// What the job answers.
    type Output: Send + 'static;

    /// Runs the job's statements on `connection`, inside a transaction.
    fn write<'c>(
        &'c self,
        connection: &'c mut AnyConnection,
        db: &'c Db,
    ) -> WriteFuture<'c, Self::Output>;

    /// Runs the job on its own, outside any group (on PostgreSQL, or a
    /// SQLite database in memory): by default [`GroupJob::write`] in a
    /// transaction of its own. A job that can be atomic in fewer round
    /// trips (one statement, or a read and one conditional statement)
    /// says how here.
    fn write_alone<'a>(&'a self, db: &'a Db) -> WriteFuture<'a, Self::Output>
    where
        Self: Sized,
    {
        Box::pin(in_transaction(self, db))
    }
}

/// Runs `job` in a transaction of its own.
pub(crate) async fn in_transaction<J: GroupJob>(
    job: &J,
    db: &Db,
) -> Result<J::Output, sqlx::Error> {
    let mut transaction = db.begin_write().await?;
    let output = job.write(&mut transaction, db).await?;
    transaction.commit().await?;
    Ok(output)
}

type Queued<J> = (J, oneshot::Sender<Written<<J as GroupJob>::Output>>);

/// Writes jobs: grouped on a SQLite file, one transaction each otherwise.
#[derive(Debug)]
pub(crate) struct GroupWriter<J: GroupJob> {
    db: Db,
    group: Option<mpsc::Sender<Queued<J>>>,
}

impl<J: GroupJob> Clone for GroupWriter<J> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            group: self.group.clone(),
        }
    }
}

impl<J: GroupJob> GroupWriter<J> {
    /// A writer for `db`; on a SQLite file it starts the group-commit task,
    /// which ends when the last clone of the writer is dropped. Needs a
    /// tokio runtime.
    pub(crate) fn start(db: Db) -> Self {
        let group = db.has_write_connection().then(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(commit_groups(db.clone(), receiver));
            sender
        });
        Self { db, group }
    }

    /// Runs `job` in a group, or on its own ([`GroupJob::write_alone`]);
    /// answers once its writes are committed.
    pub(crate) async fn write(&self, job: J) -> Written<J::Output> {
        let Some(group) = &self.group else {
            return Ok(job.write_alone(&self.db).await?);
        };
        let (reply, answer) = oneshot::channel();
        let stopped = || Arc::new(sqlx::Error::PoolClosed);
        group.send((job, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The group-commit task: takes what has queued (at most [`MAX_GROUP`]),
/// writes it in one transaction, answers, and goes on.
async fn commit_groups<J: GroupJob>(db: Db, mut jobs: mpsc::Receiver<Queued<J>>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while jobs.recv_many(&mut group, MAX_GROUP).await > 0 {
        match write_group(&db, &group).await {
            Ok(outputs) => {
                for ((_, reply), output) in group.drain(..).zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(Arc::clone(&error)));
                }
            }
        }
    }
}

async fn write_group<J: GroupJob>(
    db: &Db,
    group: &[Queued<J>],
) -> Result<Vec<J::Output>, sqlx::Error> {
    let mut transaction = db.begin_write().await?;
    let mut outputs = Vec::with_capacity(group.len());
    for (job, _) in group {
        outputs.push(job.write(&mut transaction, db).await?);
    }
    transaction.commit().await?;
    Ok(outputs)
}
