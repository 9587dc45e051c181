//! The service's log output: a `tracing` subscriber filtered by
//! `log.filter`, writing text or JSON lines per `log.format`.
//!
//! Text lines write fields as `name=value`. A string value is written as it
//! is when it is plain (visible ASCII without `"`, `\` or `=`), which the
//! request span's method, route template and request id always are, and
//! quoted and escaped otherwise, so a value can never forge a field or a
//! line. Messages and values recorded with `?` or `%` are written as they
//! are, with control characters escaped, so they cannot forge a line; a
//! value from a request is recorded as a string (`key = key.as_str()`), so
//! it cannot forge a field either. JSON lines escape everything as JSON
//! strings do.
//! This is tracing-subscriber's default text format without its per-field
//! styling, which costs a request span more than the rest of its fields do.
//!
//! # The request a line belongs to
//!
//! A line written while a request is handled carries the request's method,
//! route and id in its `request` span: `request{method=GET
//! route=/api/content request_id=…}:` before the target in text, and as the
//! span's fields in JSON. The span itself has no fields: the request's
//! [`RequestFields`] ride in its extensions (see [`RequestFields::attach`]),
//! and the formatters write them only when a line is written, so a request
//! that logs nothing formats nothing. Being a span, it follows the request
//! where work hands it on, such as sqlx's SQLite worker thread.
//!
//! ```
//! use seawall_app::logging::RequestFields;
//!
//! let fields = RequestFields::new("GET", "/api/content", "req-1");
//! fields.sync_scope(|| {
//!     assert_eq!(RequestFields::current_request_id().as_deref(), Some("req-1"));
//! });
//! assert_eq!(RequestFields::current_request_id(), None);
//! ```

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::sync::Arc;

use serde::ser::{SerializeMap as _, Serializer as _};
use serde_json::{Map, Value};
use tokio::task::futures::TaskLocalFuture;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Span, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::{LookupSpan, Registry, SpanRef};

use crate::config::{LogConfig, LogFormat};

tokio::task_local! {
    static REQUEST: RequestFields;
}

/// The request being handled: its method, route template and id. Every
/// line logged inside the span they are [attached](Self::attach) to carries
/// them, and [`current_request_id`](Self::current_request_id) answers with
/// the id while they are in [`scope`](Self::scope). Cloning is one
/// reference count.
#[derive(Debug, Clone)]
pub struct RequestFields(Arc<Fields>);

#[derive(Debug, Clone)]
struct Fields {
    method: Cow<'static, str>,
    route: Cow<'static, str>,
    request_id: Box<str>,
    trace_id: Option<Box<str>>,
}

impl RequestFields {
    /// The fields of one request: its method, its route template (never the
    /// raw path) and its id.
    pub fn new(
        method: impl Into<Cow<'static, str>>,
        route: impl Into<Cow<'static, str>>,
        request_id: impl Into<Box<str>>,
    ) -> Self {
        Self(Arc::new(Fields {
            method: method.into(),
            route: route.into(),
            request_id: request_id.into(),
            trace_id: None,
        }))
    }

    /// These fields and the id of the trace the request is part of (32 hex
    /// digits), written after the request id.
    #[must_use]
    pub fn with_trace_id(mut self, trace_id: impl Into<Box<str>>) -> Self {
        Arc::make_mut(&mut self.0).trace_id = Some(trace_id.into());
        self
    }

    /// The request's id.
    #[must_use]
    pub fn request_id(&self) -> &str {
        &self.0.request_id
    }

    /// Puts these fields in `span`'s extensions, where the log formatters
    /// of [`log_subscriber`] write them as the span's fields. The span is
    /// the caller's own (`tracing::info_span!("request")` with no fields),
    /// so that its target is the caller's for log filters. Nothing happens
    /// for a disabled span or a subscriber not built on tracing-subscriber's
    /// registry.
    pub fn attach(&self, span: &Span) {
        span.with_subscriber(|(id, dispatch)| {
            if let Some(registry) = dispatch.downcast_ref::<Registry>()
                && let Some(data) = registry.span(id)
            {
                data.extensions_mut().insert(self.clone());
            }
        });
    }

    /// Runs `future` with these fields in scope.
    pub fn scope<F: Future>(self, future: F) -> TaskLocalFuture<Self, F> {
        REQUEST.scope(self, future)
    }

    /// Runs `f` with these fields in scope.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        REQUEST.sync_scope(self, f)
    }

    /// The id of the request in scope, if there is one and it is not empty.
    #[must_use]
    pub fn current_request_id() -> Option<Box<str>> {
        REQUEST
            .try_with(|fields| fields.0.request_id.clone())
            .ok()
            .filter(|id| !id.is_empty())
    }

    /// The fields as (name, value) pairs, in the order they are written.
    fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("method", &*self.0.method),
            ("route", &*self.0.route),
            ("request_id", &*self.0.request_id),
        ]
        .into_iter()
        .chain(self.0.trace_id.as_deref().map(|id| ("trace_id", id)))
    }
}

/// The subscriber the service logs with, writing to `writer`, with ANSI
/// colours when `ansi`. An invalid filter (validation refuses one) falls
/// back to `info`.
///
/// ```
/// use tracing_subscriber::util::SubscriberInitExt as _;
///
/// let log = seawall_app::config::LogConfig::default();
/// let subscriber = seawall_app::log_subscriber(&log, std::io::sink, false);
/// tracing::subscriber::with_default(subscriber, || tracing::info!("into the sink"));
/// ```
pub fn log_subscriber<W>(
    log: &LogConfig,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match log.format {
        LogFormat::Text => Box::new(
            builder
                .fmt_fields(PlainFields)
                .event_format(TextLine)
                .finish(),
        ),
        LogFormat::Json => Box::new(
            builder
                .fmt_fields(JsonFields::new())
                .event_format(JsonLine)
                .finish(),
        ),
    }
}

/// The subscriber of [`log_subscriber`] with a second layer that records
/// spans for OpenTelemetry through `tracer`, filtered on its own by
/// `traces` (a filter as `log.filter` is; validation checks it, and an
/// invalid one falls back to `info`). The log keeps its own filter, so
/// spans can be exported at `debug` while the log stays at `info`.
pub fn traced_subscriber<W>(
    log: &LogConfig,
    writer: W,
    ansi: bool,
    traces: &str,
    tracer: opentelemetry_sdk::trace::Tracer,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let filter = |text: &str| {
        tracing_subscriber::EnvFilter::try_new(text)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let lines = match log.format {
        LogFormat::Text => lines
            .fmt_fields(PlainFields)
            .event_format(TextLine)
            .with_filter(filter(&log.filter))
            .boxed(),
        LogFormat::Json => lines
            .fmt_fields(JsonFields::new())
            .event_format(JsonLine)
            .with_filter(filter(&log.filter))
            .boxed(),
    };
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter(traces));
    Box::new(Registry::default().with(lines).with(spans))
}

/// tracing-subscriber's default text line (time, level, spans, target,
/// fields), with a request span's [`RequestFields`] as its fields.
#[derive(Debug, Clone, Copy)]
struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let ansi = writer.has_ansi_escapes();
        let style = |code: &'static str| if ansi { code } else { "" };
        let (bold, dimmed, reset) = (style("\x1b[1m"), style("\x1b[2m"), style("\x1b[0m"));

        write!(writer, "{dimmed}")?;
        if SystemTime.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        write!(writer, "{reset} ")?;
        let (colour, level) = level_text(*meta.level());
        write!(writer, "{}{level}{reset} ", style(colour))?;

        let mut spans = false;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                spans = true;
                write!(writer, "{bold}{}{reset}", span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(request) = extensions.get::<RequestFields>() {
                    write!(writer, "{bold}{{{reset}")?;
                    for (index, (name, value)) in request.pairs().enumerate() {
                        if index > 0 {
                            writer.write_char(' ')?;
                        }
                        write!(writer, "{name}=")?;
                        write_value(&mut writer, value)?;
                    }
                    write!(writer, "{bold}}}{reset}")?;
                } else if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{bold}{{{reset}{fields}{bold}}}{reset}")?;
                }
                write!(writer, "{dimmed}:{reset}")?;
            }
        }
        if spans {
            writer.write_char(' ')?;
        }
        write!(writer, "{dimmed}{}:{reset} ", meta.target())?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// A level's colour code and its text, padded to five as tracing-subscriber does.
fn level_text(level: Level) -> (&'static str, &'static str) {
    match level {
        Level::TRACE => ("\x1b[35m", "TRACE"),
        Level::DEBUG => ("\x1b[34m", "DEBUG"),
        Level::INFO => ("\x1b[32m", " INFO"),
        Level::WARN => ("\x1b[33m", " WARN"),
        Level::ERROR => ("\x1b[31m", "ERROR"),
    }
}

/// tracing-subscriber's JSON line (`timestamp`, `level`, `fields`, `target`,
/// `span` for the innermost span, `spans` from the root), with a request
/// span's [`RequestFields`] as its fields.
#[derive(Debug, Clone, Copy)]
struct JsonLine;

impl<S> FormatEvent<S, JsonFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonVisitor(Object(Vec::new()));
        event.record(&mut fields);

        // As tracing-subscriber does: `span` is the event's parent or else
        // the current span, `spans` the current span's scope from the root.
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        let span = current.as_ref().map(span_object);
        let spans: Option<Vec<Object>> = current.as_ref().map(|_| {
            ctx.lookup_current()
                .map(|span| {
                    span.scope()
                        .from_root()
                        .map(|span| span_object(&span))
                        .collect()
                })
                .unwrap_or_default()
        });

        let mut line = serde_json::Serializer::new(Vec::new());
        let mut map = line.serialize_map(None).map_err(|_| fmt::Error)?;
        let written = (|| {
            map.serialize_entry("timestamp", &timestamp)?;
            map.serialize_entry("level", meta.level().as_str())?;
            map.serialize_entry("fields", &fields.0)?;
            map.serialize_entry("target", meta.target())?;
            if let Some(span) = &span {
                map.serialize_entry("span", span)?;
            }
            if let Some(spans) = &spans {
                map.serialize_entry("spans", spans)?;
            }
            map.end()
        })();
        written.map_err(|_| fmt::Error)?;
        let text = String::from_utf8(line.into_inner()).map_err(|_| fmt::Error)?;
        writer.write_str(&text)?;
        writeln!(writer)
    }
}

/// A span as JSON: a request span's [`RequestFields`] or the span's own
/// fields, then its `name`.
fn span_object<S>(span: &SpanRef<'_, S>) -> Object
where
    S: for<'a> LookupSpan<'a>,
{
    let extensions = span.extensions();
    let mut object: Vec<(String, Value)> = if let Some(request) = extensions.get::<RequestFields>()
    {
        request
            .pairs()
            .map(|(name, value)| (name.to_owned(), Value::from(value)))
            .collect()
    } else {
        extensions
            .get::<FormattedFields<JsonFields>>()
            .and_then(|fields| serde_json::from_str::<Map<String, Value>>(fields).ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, _)| !name.starts_with("otel."))
            .collect()
    };
    object.push(("name".to_owned(), Value::from(span.metadata().name())));
    Object(object)
}

/// A JSON object whose keys keep their order.
struct Object(Vec<(String, Value)>);

impl serde::Serialize for Object {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// An event's fields as a JSON object, in the order they were recorded, as
/// tracing-subscriber's JSON format writes them: numbers and booleans as
/// themselves, everything else as text.
struct JsonVisitor(Object);

impl JsonVisitor {
    fn insert(&mut self, field: &Field, value: Value) {
        self.0.0.push((field.name().to_owned(), value));
    }
}

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.insert(field, Value::from(format!("{value:?}")));
    }
}

/// Fields as `name=value`, separated by spaces (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = PlainVisitor {
            writer,
            empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    /// Whether nothing has been written yet (no separator needed).
    empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Writes the separator and `name=` (nothing for the message); false when
    /// the field is to be skipped or writing has failed.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        // Metadata of records bridged from the `log` crate, already shown,
        // and the span name, kind and status an OpenTelemetry exporter reads.
        if self.result.is_err() || name.starts_with("log.") || name.starts_with("otel.") {
            return false;
        }
        if !self.empty {
            self.result = self.writer.write_char(' ');
        }
        self.empty = false;
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            write_escaped(&mut self.writer, value)
        } else {
            write_value(&mut self.writer, value)
        };
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        // A message is `format_args!`, whose `Debug` is its text; a `%value`
        // field is its `Display` text, unquoted. Either may hold a line break.
        self.result = write!(Escaping(&mut self.writer), "{value:?}");
    }
}

/// Whether `value` can be written unquoted without being mistaken for more
/// than one value.
fn is_plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='))
}

/// A string field's value: bare when plain, quoted and escaped otherwise.
fn write_value(writer: &mut Writer<'_>, value: &str) -> fmt::Result {
    if is_plain(value) {
        writer.write_str(value)
    } else {
        write!(writer, "{value:?}")
    }
}

fn write_escaped(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    Escaping(writer).write_str(text)
}

/// Writes text through with control characters (a line break, or the escape
/// sequences a terminal would obey) escaped.
struct Escaping<'a, 'writer>(&'a mut Writer<'writer>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut rest = text;
        while let Some(at) = rest.find(|c: char| c.is_control()) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(self.0, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text_log(emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = log_subscriber(&LogConfig::default(), move || writer.clone(), false);
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    #[test]
    fn plain_values_bare_others_quoted() {
        let log = text_log(|| {
            let span = tracing::info_span!("request", method = "GET", route = "/api/content");
            let _entered = span.enter();
            tracing::info!(
                id = "a b",
                quote = "say \"hi\"",
                eq = "k=v",
                empty = "",
                count = 3_u64,
                ratio = 0.5_f64,
                "done"
            );
        });
        assert!(
            log.contains("request{method=GET route=/api/content}"),
            "{log}"
        );
        assert!(
            log.contains(r#"done id="a b" quote="say \"hi\"" eq="k=v" empty="" count=3 ratio=0.5"#),
            "{log}"
        );
    }

    #[test]
    fn a_value_cannot_break_the_line() {
        let log = text_log(|| {
            let evil = "x\nfake line\u{1b}[31m";
            tracing::warn!(path = evil, "saw {evil}");
        });
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(!log.contains('\u{1b}'), "{log}");
        assert!(log.contains(r#"path="x\nfake line\u{1b}[31m""#), "{log}");
        assert!(log.contains(r"saw x\nfake line\u{1b}[31m"), "{log}");
    }

    #[test]
    fn a_displayed_or_debugged_value_cannot_break_the_line() {
        let log = text_log(|| {
            let key = String::from("x\r\n2026-01-01T00:00:00Z ERROR forged\u{1b}[2J");
            tracing::info!(key = %key, "key blocked");
            tracing::info!(error = %std::io::Error::other(key.clone()), "failed");
            tracing::info!(key = ?key, "key blocked");
        });
        assert_eq!(log.lines().count(), 3, "{log}");
        assert!(!log.contains('\u{1b}'), "{log}");
        assert!(
            log.contains(r"key=x\r\n2026-01-01T00:00:00Z ERROR forged\u{1b}[2J"),
            "{log}"
        );
    }

    fn json_text(emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let log = LogConfig {
            format: LogFormat::Json,
            ..LogConfig::default()
        };
        let subscriber = log_subscriber(&log, move || writer.clone(), false);
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("UTF-8")
    }

    fn json_log(emit: impl FnOnce()) -> Vec<serde_json::Value> {
        json_text(emit)
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect()
    }

    #[test]
    fn json_keys_come_in_tracing_subscribers_order() {
        let line = json_text(in_request(|| tracing::info!(b = 1_u64, a = 2_u64, "hi")));
        let order = [
            "\"timestamp\":",
            "\"level\":",
            "\"fields\":{\"message\":\"hi\",\"b\":1,\"a\":2}",
            "\"target\":",
            "\"span\":{\"method\":",
            "\"spans\":[{\"method\":",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|key| line.find(key).unwrap_or_else(|| panic!("{key} in {line}")))
            .collect();
        assert!(at.is_sorted(), "{line}");
        assert!(
            line.contains("\"request_id\":\"id \\\"7\\\"\",\"name\":\"request\"}"),
            "{line}"
        );
    }

    fn in_request(emit: impl FnOnce()) -> impl FnOnce() {
        move || {
            let span = tracing::info_span!("request");
            RequestFields::new("GET", "/api/items/{id}", "id \"7\"").attach(&span);
            span.in_scope(emit);
        }
    }

    #[test]
    fn a_line_in_a_request_carries_its_fields_as_the_outer_span() {
        let log = text_log(in_request(|| {
            let inner = tracing::info_span!("load", key = 3_u64);
            let _entered = inner.enter();
            tracing::info!(status = 500_u64, "request failed");
        }));
        assert!(
            log.contains(
                r#" INFO request{method=GET route=/api/items/{id} request_id="id \"7\""}:load{key=3}: seawall_app::logging::tests: request failed status=500"#
            ),
            "{log}"
        );
        let outside = text_log(|| tracing::warn!("alone"));
        assert!(
            outside.contains(" WARN seawall_app::logging::tests: alone"),
            "{outside}"
        );
    }

    #[test]
    fn a_json_line_in_a_request_has_it_as_span_and_first_of_spans() {
        let lines = json_log(in_request(|| {
            tracing::info!(status = 500_u64, latency_ms = 1.5_f64, "request failed");
            let inner = tracing::info_span!("load", key = 3_u64);
            let _entered = inner.enter();
            tracing::warn!(error = %"boom", "inner");
        }));
        let [outer, inner] = lines.as_slice() else {
            panic!("two lines: {lines:?}");
        };
        let request = serde_json::json!({
            "name": "request",
            "method": "GET",
            "route": "/api/items/{id}",
            "request_id": "id \"7\"",
        });
        assert_eq!(outer["span"], request, "{outer}");
        assert_eq!(outer["spans"], serde_json::json!([request]), "{outer}");
        assert_eq!(outer["fields"]["status"], 500, "{outer}");
        assert_eq!(outer["fields"]["latency_ms"], 1.5, "{outer}");
        assert_eq!(outer["fields"]["message"], "request failed", "{outer}");
        assert_eq!(outer["level"], "INFO", "{outer}");
        assert_eq!(outer["target"], "seawall_app::logging::tests", "{outer}");
        assert!(
            outer["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{outer}"
        );
        let load = serde_json::json!({"name": "load", "key": 3});
        assert_eq!(inner["span"], load, "{inner}");
        assert_eq!(
            inner["spans"],
            serde_json::json!([request, load]),
            "{inner}"
        );
        assert_eq!(inner["fields"]["error"], "boom", "{inner}");

        let outside = json_log(|| tracing::info!("alone"));
        assert!(outside[0].get("span").is_none(), "{:?}", outside[0]);
        assert!(outside[0].get("spans").is_none(), "{:?}", outside[0]);
    }

    #[test]
    fn fields_recorded_later_are_appended() {
        let log = text_log(|| {
            let span = tracing::info_span!("request", route = "/x", status = tracing::field::Empty);
            span.record("status", 503_u64);
            let _entered = span.enter();
            tracing::info!("failed");
        });
        assert!(log.contains("request{route=/x status=503}"), "{log}");
    }
}
