//! The trace context that travels with a job (feature `opentelemetry`): a
//! run's span is the child of a single enqueue's span and linked to a bulk
//! enqueue's, on memory and on Redis. Spans are recorded by the
//! OpenTelemetry SDK through `tracing-opentelemetry`, as an application
//! would record them.
//!
//! A test binary of its own, in which every test installs its subscriber:
//! `tracing` caches whether a span is wanted when a thread first meets it,
//! and while a single subscriber is registered it asks only that thread's
//! own, so a test elsewhere running the same spans with none could leave
//! them unwanted for these.

use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanKind, TraceId, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use seawall_queue::fred::prelude::{Builder, Config};
use seawall_queue::{Job, JobOptions, Queues};
use seawall_testkit::{RedisServer, unique_prefix, wait};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// Where the jobs live.
enum Backend {
    Memory,
    /// A redis-server of this test binary's own, shared by its tests.
    Redis,
}

impl Backend {
    /// Queues of their own: on Redis, under a key prefix no other test uses.
    async fn queues(&self) -> Queues {
        match self {
            Self::Memory => Queues::memory(),
            Self::Redis => {
                let url = RedisServer::shared().url();
                let config = Config::from_url(&url).expect("a valid URL");
                Queues::redis(Builder::from_config(config))
                    .prefix(unique_prefix())
                    .connect()
                    .await
                    .expect("connects")
            }
        }
    }
}

/// Runs `scenario` on a current-thread runtime under a subscriber that
/// records spans in memory, and answers them once all have ended.
fn recorded(scenario: impl AsyncFnOnce()) -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("queue-test")));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    tracing::subscriber::with_default(subscriber, || runtime.block_on(scenario()));
    drop(runtime);
    provider.force_flush().expect("flushes");
    exporter.get_finished_spans().expect("spans")
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|KeyValue { key: k, .. }| k.as_str() == key)
        .map(|kv| &kv.value)
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

/// Waits until `jobs` jobs of `queue` have completed or died.
async fn finished(queues: &Queues, queue: &str, jobs: u64) {
    let began = Instant::now();
    loop {
        let counts = queues.counts(queue).await.expect("counts");
        if counts.completed + counts.dead == jobs {
            return;
        }
        assert!(
            began.elapsed() < wait::patience(),
            "waited {:?} for {jobs} jobs of {queue} to complete or die; last counts {counts:?}",
            wait::patience()
        );
        tokio::time::sleep(wait::POLL).await;
    }
}

/// Enqueues in a `request` span: `one` job alone, then `bulk` jobs in one
/// call, and runs them all.
async fn enqueue_and_run(backend: &Backend, queue: &str, bulk: u32) {
    let queues = backend.queues().await;
    let request = tracing::info_span!("request");
    async {
        queues
            .enqueue(queue, &0_u32, &JobOptions::new())
            .await
            .expect("enqueues");
        let jobs = (1..=bulk).map(|n| (n, JobOptions::new()));
        queues.enqueue_many(queue, jobs).await.expect("enqueues");
    }
    .instrument(request)
    .await;
    let worker = queues
        .worker(queue)
        .expect("a worker")
        .start(|job: Job<u32>| async move {
            if job.payload == 2 {
                return Err(seawall_queue::JobError::permanent("two is refused"));
            }
            Ok(())
        });
    finished(&queues, queue, 1 + u64::from(bulk)).await;
    worker.shutdown(Duration::from_secs(5)).await;
}

fn a_run_continues_the_trace_of_its_enqueue(backend: &Backend) {
    let spans = recorded(async || enqueue_and_run(backend, "traced", 3).await);
    let request = named(&spans, "request");
    let [request] = request.as_slice() else {
        panic!("one request span: {spans:#?}");
    };
    let sends = named(&spans, "send traced");
    assert_eq!(sends.len(), 2, "a span per enqueue call: {sends:#?}");
    let runs = named(&spans, "process traced");
    assert_eq!(runs.len(), 4, "a span per run: {runs:#?}");
    for send in &sends {
        assert_eq!(send.span_kind, SpanKind::Producer);
        assert_eq!(send.parent_span_id, request.span_context.span_id());
        assert_eq!(
            send.span_context.trace_id(),
            request.span_context.trace_id()
        );
        assert_eq!(
            attribute(send, "messaging.destination.name"),
            Some(&Value::from("traced"))
        );
    }
    let (single, bulk): (Vec<&SpanData>, Vec<&SpanData>) = sends
        .iter()
        .copied()
        .partition(|send| attribute(send, "messaging.message.id").is_some());
    let ([single], [bulk]) = (single.as_slice(), bulk.as_slice()) else {
        panic!("one single and one bulk enqueue: {sends:#?}");
    };
    assert_eq!(
        attribute(bulk, "messaging.batch.message_count"),
        Some(&Value::I64(3))
    );
    let single_id = attribute(single, "messaging.message.id").cloned();
    for run in &runs {
        assert_eq!(run.span_kind, SpanKind::Consumer);
        assert_eq!(
            attribute(run, "messaging.system"),
            Some(&Value::from("seawall"))
        );
        assert_eq!(attribute(run, "seawall.job.run"), Some(&Value::I64(1)));
        if attribute(run, "messaging.message.id").cloned() == single_id {
            // One job enqueued alone: its run is the enqueue's child.
            assert_eq!(run.span_context.trace_id(), single.span_context.trace_id());
            assert_eq!(run.parent_span_id, single.span_context.span_id());
            assert!(run.parent_span_is_remote);
            assert!(run.links.is_empty());
        } else {
            // One of many: a trace of its own, linked to the enqueue.
            assert_ne!(run.span_context.trace_id(), bulk.span_context.trace_id());
            let links: Vec<_> = run
                .links
                .iter()
                .map(|link| (link.span_context.trace_id(), link.span_context.span_id()))
                .collect();
            let enqueue = (bulk.span_context.trace_id(), bulk.span_context.span_id());
            assert_eq!(links, [enqueue], "{run:#?}");
        }
    }
    let outcomes: Vec<_> = runs
        .iter()
        .map(|run| attribute(run, "seawall.job.outcome").map(Value::as_str))
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| o.as_deref() == Some("completed"))
            .count(),
        3,
        "{outcomes:?}"
    );
    let dead = runs
        .iter()
        .find(|run| {
            attribute(run, "seawall.job.outcome")
                .map(Value::as_str)
                .as_deref()
                == Some("dead")
        })
        .expect("the refused job's run");
    assert_eq!(dead.status, opentelemetry::trace::Status::error(""));
}

#[test]
fn on_memory_a_run_continues_the_trace_of_its_enqueue() {
    a_run_continues_the_trace_of_its_enqueue(&Backend::Memory);
}

#[test]
fn on_redis_a_run_continues_the_trace_of_its_enqueue() {
    a_run_continues_the_trace_of_its_enqueue(&Backend::Redis);
}

#[test]
fn a_job_enqueued_outside_any_span_runs_as_the_child_of_its_enqueue() {
    let backend = Backend::Redis;
    let spans = recorded(async || {
        let queues = backend.queues().await;
        queues
            .enqueue("untraced", &7_u32, &JobOptions::new())
            .await
            .expect("enqueues");
        let worker = queues
            .worker("untraced")
            .expect("a worker")
            .start(|_: Job<u32>| async { Ok(()) });
        finished(&queues, "untraced", 1).await;
        worker.shutdown(Duration::from_secs(5)).await;
    });
    let sends = named(&spans, "send untraced");
    let runs = named(&spans, "process untraced");
    let ([send], [run]) = (sends.as_slice(), runs.as_slice()) else {
        panic!("one enqueue and one run: {spans:#?}");
    };
    // The enqueue's span is a root, and the run its child all the same.
    assert_ne!(send.span_context.trace_id(), TraceId::INVALID);
    assert_eq!(run.span_context.trace_id(), send.span_context.trace_id());
    assert_eq!(run.parent_span_id, send.span_context.span_id());
}
