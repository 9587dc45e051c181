//! Spans for enqueues and job runs, named after the OpenTelemetry messaging
//! conventions, and (feature `opentelemetry`) the W3C trace context that
//! travels with a job from the enqueue to its runs.
//!
//! An enqueue runs in a `queue.send` span (`send <queue>`, kind producer);
//! each run of a job in a `queue.process` span (`process <queue>`, kind
//! consumer). With the feature on and a [`tracing-opentelemetry`] layer
//! installed, an enqueue stores the `traceparent` and `tracestate` of its
//! span with each job, and a run's span takes that context as its parent
//! (one job enqueued alone) or links to it (a job of a bulk enqueue, whose
//! producer span stands for many jobs). Without a subscriber the spans are
//! disabled callsites: one check each, nothing formatted.
//!
//! The context is stored as one job field: `p` (parent) or `l` (link), a
//! space, the `traceparent`, then a space and the `tracestate` if there is
//! one. Neither a `traceparent` nor a mode letter holds a space, and a
//! `tracestate` holds no control character, so the text splits back
//! unambiguously.
//!
//! [`tracing-opentelemetry`]: https://docs.rs/tracing-opentelemetry

use tracing::Span;

/// The producer span of an enqueue to `queue`; a bulk enqueue records
/// `messaging.batch.message_count`, one job's its `messaging.message.id`.
pub(crate) fn send_span(queue: &str) -> Span {
    tracing::info_span!(
        "queue.send",
        otel.name = %format_args!("send {queue}"),
        otel.kind = "producer",
        messaging.system = "seawall",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = queue,
        messaging.message.id = tracing::field::Empty,
        messaging.batch.message_count = tracing::field::Empty,
    )
}

/// The consumer span of run `run` of job `id` of `queue`, its parent or
/// link taken from the job's stored context `stored` (empty for none).
/// [`finish`] records how the run ended.
pub(crate) fn process_span(queue: &str, id: &str, run: u32, stored: &str) -> Span {
    // A root in the subscriber's tree, whatever span the worker's loop runs
    // in: its trace is the job's own.
    let span = tracing::info_span!(
        parent: None,
        "queue.process",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "seawall",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = queue,
        messaging.message.id = id,
        // Signed: OpenTelemetry's integers are, and an unsigned one would
        // arrive as text.
        seawall.job.run = i64::from(run),
        seawall.job.outcome = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    #[cfg(feature = "opentelemetry")]
    if !span.is_disabled() {
        if !stored.is_empty() {
            otel::follow(&span, stored);
        }
        otel::record_trace_id(&span);
    }
    #[cfg(not(feature = "opentelemetry"))]
    let _ = stored;
    span
}

/// Records on a [`process_span`] how its run ended: `completed`, `failed`
/// (retried if it has attempts left, else dead), `dead` (a permanent
/// error), `requeued` (given back undone, no attempt counted),
/// `cancelled`.
pub(crate) fn finish(span: &Span, outcome: &'static str) {
    span.record("seawall.job.outcome", outcome);
    if matches!(outcome, "failed" | "dead") {
        span.record("otel.status_code", "ERROR");
    }
}

/// The trace context to store with the jobs of an enqueue made in the
/// current span (`bulk`: one of many jobs, linked rather than parented);
/// empty when there is none, and always without the `opentelemetry`
/// feature.
pub(crate) fn capture(bulk: bool) -> String {
    #[cfg(feature = "opentelemetry")]
    {
        otel::capture(bulk)
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        let _ = bulk;
        String::new()
    }
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use std::fmt::Write as _;

    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    /// The most bytes of a stored trace context: a `traceparent` (55), its
    /// mode and separators, and a `tracestate` of up to
    /// [`MAX_TRACESTATE_BYTES`]. `enqueue.lua` refuses a longer one.
    const MAX_TRACE_BYTES: usize = 600;

    /// The longest `tracestate` kept (the W3C limit a propagator must
    /// keep); a longer one is dropped rather than cut.
    const MAX_TRACESTATE_BYTES: usize = 512;

    pub(super) fn capture(bulk: bool) -> String {
        let span = Span::current();
        if span.is_disabled() {
            return String::new();
        }
        let context = span.context();
        let span_ref = context.span();
        encode(span_ref.span_context(), bulk)
    }

    /// `p`/`l`, the `traceparent`, and the `tracestate` when it fits.
    pub(super) fn encode(context: &SpanContext, bulk: bool) -> String {
        if !context.is_valid() {
            return String::new();
        }
        let mut text = String::with_capacity(64);
        let _ = write!(
            text,
            "{} 00-{}-{}-{:02x}",
            if bulk { 'l' } else { 'p' },
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        let state = context.trace_state().header();
        if !state.is_empty() && state.len() <= MAX_TRACESTATE_BYTES {
            text.push(' ');
            text.push_str(&state);
        }
        debug_assert!(text.len() <= MAX_TRACE_BYTES);
        text
    }

    /// The stored context back: whether it is a link, and the remote span
    /// context; `None` for anything malformed (a run is never refused for
    /// its trace context).
    pub(super) fn decode(stored: &str) -> Option<(bool, SpanContext)> {
        let mut words = stored.splitn(3, ' ');
        let link = match words.next()? {
            "p" => false,
            "l" => true,
            _ => return None,
        };
        let mut parts = words.next()?.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if version != "00"
            || parts.next().is_some()
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let span_id = SpanId::from_hex(span).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let state = words.next().and_then(trace_state).unwrap_or_default();
        let context = SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
            true,
            state,
        );
        context.is_valid().then_some((link, context))
    }

    /// Records the span's trace id as its `trace_id` field, so that every
    /// line the run logs names its trace; nothing when no OpenTelemetry
    /// layer records the span.
    pub(super) fn record_trace_id(span: &Span) {
        let context = span.context();
        let span_ref = context.span();
        let span_context = span_ref.span_context();
        if span_context.is_valid() {
            span.record("trace_id", tracing::field::display(span_context.trace_id()));
        }
    }

    /// A `tracestate` header's list members, checked as W3C asks (keys and
    /// values of the allowed characters and lengths); `None` when any is
    /// not, since a propagator drops a malformed `tracestate` whole.
    fn trace_state(header: &str) -> Option<TraceState> {
        let mut members = Vec::new();
        for member in header.split(',').map(|m| m.trim_matches([' ', '\t'])) {
            if member.is_empty() {
                continue;
            }
            let (key, value) = member.split_once('=')?;
            let key_ok = (1..=256).contains(&key.len())
                && key
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b));
            let value_ok = (1..=256).contains(&value.len())
                && !value.ends_with(' ')
                && value
                    .bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
            if !key_ok || !value_ok || members.len() == 32 {
                return None;
            }
            members.push((key, value));
        }
        TraceState::from_key_value(members).ok()
    }

    pub(super) fn follow(span: &Span, stored: &str) {
        let Some((link, remote)) = decode(stored) else {
            return;
        };
        if link {
            span.add_link(remote);
        } else {
            let parent = opentelemetry::Context::new().with_remote_span_context(remote);
            // Fails only when no OpenTelemetry layer listens: nothing to do.
            let _ = span.set_parent(parent);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_context_survives_the_round_trip() {
            let context = SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("a trace id"),
                SpanId::from_hex("00f067aa0ba902b7").expect("a span id"),
                TraceFlags::SAMPLED,
                false,
                "vendor=a:b;c,other=1".parse().expect("a tracestate"),
            );
            for bulk in [false, true] {
                let stored = encode(&context, bulk);
                let (link, back) = decode(&stored).expect("decodes");
                assert_eq!(link, bulk);
                assert_eq!(back.trace_id(), context.trace_id());
                assert_eq!(back.span_id(), context.span_id());
                assert!(back.is_sampled());
                assert!(back.is_remote());
                assert_eq!(back.trace_state().header(), "vendor=a:b;c,other=1");
            }
            assert_eq!(
                encode(&context, false).split(' ').nth(1),
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            );
        }

        #[test]
        fn no_context_stores_nothing_and_malformed_ones_are_ignored() {
            assert_eq!(encode(&SpanContext::empty_context(), false), "");
            for stored in [
                "",
                "p",
                "x 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "p 01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "p 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "p 00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "p 00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "p 00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "p 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-zz",
                "p 00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
            ] {
                assert!(decode(stored).is_none(), "{stored:?}");
            }
            // An unreadable tracestate is dropped; the parent is kept.
            let (_, context) =
                decode("p 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 =,=")
                    .expect("the traceparent decodes");
            assert!(!context.is_sampled());
            assert_eq!(context.trace_state().header(), "");
        }
    }
}
