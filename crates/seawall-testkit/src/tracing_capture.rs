//! A `tracing` subscriber that records every span and event of the process,
//! for tests that check what a library tells a subscriber.
//!
//! [`recorded`] installs it as the global default on first use. Use it in a
//! test binary of its own: `tracing` caches whether a callsite is wanted when
//! it first meets it, so a callsite first met before the subscriber was
//! installed (or under another) would stay unwanted. Tests of one binary run
//! side by side, so each picks its own records out, by a name or key prefix
//! of its own ([`named`]).
//!
//! ```
//! use seawall_testkit::tracing_capture::{install, named};
//!
//! install(); // before the code under test first meets its callsites
//! tracing::info_span!("work", job = "j-1").in_scope(|| tracing::debug!(step = 2, "done"));
//! let work = named("work", "job", "j-1");
//! assert_eq!(work.len(), 1);
//! assert!(work[0].span);
//! ```

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// A span (recorded when it closes, with every field it was given at its
/// start or later) or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// A span, not an event.
    pub span: bool,
    /// The span's name, or the event's (`event file:line` unless given one).
    pub name: String,
    /// The name of the span it was started or emitted in.
    pub parent: Option<String>,
    /// Every field, `Debug`-formatted (strings as they are).
    pub fields: BTreeMap<String, String>,
}

impl Recorded {
    /// The value of the field `name`, if it was recorded.
    #[must_use]
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

type Records = Arc<Mutex<Vec<Recorded>>>;

/// Records spans (as they close) and events into a shared list.
struct Capture(Records);

impl Capture {
    fn push(&self, record: Recorded) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        span.extensions_mut().insert(Recorded {
            span: true,
            name: attrs.metadata().name().to_owned(),
            parent: span.parent().map(|parent| parent.name().to_owned()),
            fields: fields.0,
        });
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(recorded) = extensions.get_mut::<Recorded>() {
            let mut fields = Fields::default();
            values.record(&mut fields);
            recorded.fields.extend(fields.0);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.push(Recorded {
            span: false,
            name: event.metadata().name().to_owned(),
            parent: ctx.event_span(event).map(|span| span.name().to_owned()),
            fields: fields.0,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let recorded = span.extensions_mut().remove::<Recorded>();
        if let Some(recorded) = recorded {
            self.push(recorded);
        }
    }
}

/// Installs the recording subscriber as the global default, once per
/// process; later calls do nothing. [`recorded`] and [`named`] call it.
///
/// # Panics
///
/// If another global default subscriber was installed first.
pub fn install() {
    records();
}

fn records() -> &'static Records {
    static RECORDS: OnceLock<Records> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let records = Records::default();
        let subscriber = tracing_subscriber::registry().with(Capture(Arc::clone(&records)));
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber is installed in a tracing test binary");
        records
    })
}

/// Everything recorded so far in this process, oldest first.
///
/// # Panics
///
/// As [`install`].
#[must_use]
pub fn recorded() -> Vec<Recorded> {
    records()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The records named `name` (spans' or events') whose `field` is `value`.
///
/// # Panics
///
/// As [`install`].
#[must_use]
pub fn named(name: &str, field: &str, value: &str) -> Vec<Recorded> {
    recorded()
        .into_iter()
        .filter(|record| record.name == name && record.field(field) == Some(value))
        .collect()
}
