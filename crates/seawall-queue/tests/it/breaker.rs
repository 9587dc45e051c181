//! Redis killed under a producer: once a call has found it down, the
//! producer's calls are held back by the circuit breaker (answered at once,
//! never sent, nothing half-written) until Redis answers again, when they
//! go on by themselves.

use seawall_queue::{Error, JobOptions, Queues};
use seawall_testkit::{Persistence, RedisServer, wait};

use crate::support::builder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_held_back_while_redis_is_down_and_go_on_once_it_answers() {
    let mut server = RedisServer::builder()
        .persistence(Persistence::AofAlways)
        .start()
        .expect("redis-server starts");
    let queues = Queues::redis(builder(&server.url()))
        .connect()
        .await
        .expect("connects");
    let options = JobOptions::new();
    queues
        .enqueue("mail", &1_u32, &options)
        .await
        .expect("enqueued while Redis is up");
    server.kill().expect("SIGKILL");
    // The client finds the connection gone; from then on the breaker holds
    // the calls back rather than each waiting for the client's timeout.
    let held = wait::until_some_async("an enqueue held back by the breaker", async || match queues
        .enqueue("mail", &2_u32, &options)
        .await
    {
        Err(error @ Error::Unavailable { .. }) => Some(error),
        Err(_) => None,
        Ok(id) => panic!("job {id} enqueued with Redis killed"),
    })
    .await;
    assert!(held.queued_nothing(), "{held}");
    // The listing of processes, which every producer reads its wire
    // version from every 2 s (holding its enqueues meanwhile), is held back
    // too rather than waiting for the client's timeout.
    assert!(
        matches!(queues.processes().await, Err(Error::Unavailable { .. })),
        "the processes' listing went to a Redis found down"
    );
    // Held back means not sent: a hundred more calls (enqueues, a flow's
    // reads, the counts) make no round trip, save the one probe a second
    // that may fall among them.
    let before = queues.round_trips();
    let mut unavailable = 0;
    for _ in 0..100 {
        if let Err(Error::Unavailable { .. }) = queues.enqueue("mail", &3_u32, &options).await {
            unavailable += 1;
        }
        if let Err(Error::Unavailable { .. }) = queues.counts("mail").await {
            unavailable += 1;
        }
    }
    assert!(
        queues.round_trips() - before <= 2,
        "{} calls were sent",
        queues.round_trips() - before
    );
    assert!(unavailable >= 198, "{unavailable} of 200 held back");
    server.restart().expect("restarts");
    let id = wait::until_some_async("an enqueue once Redis is back", async || {
        queues.enqueue("mail", &4_u32, &options).await.ok()
    })
    .await;
    assert!(!id.as_str().is_empty());
    // Nothing the held-back calls carried was written: the first job and
    // the last are the queue's only ones (a call that timed out before the
    // breaker opened may have reached the AOF: at most job 2 besides).
    let counts = queues.counts("mail").await.expect("counts");
    assert!(
        (2..=3).contains(&counts.waiting),
        "{} jobs waiting",
        counts.waiting
    );
}
