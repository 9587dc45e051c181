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

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;

use crate::config::{LogConfig, LogFormat};

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
        LogFormat::Text => Box::new(builder.fmt_fields(PlainFields).finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
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
        // Metadata of records bridged from the `log` crate, already shown.
        if self.result.is_err() || name.starts_with("log.") {
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
        } else if is_plain(value) {
            self.writer.write_str(value)
        } else {
            write!(self.writer, "{value:?}")
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
