//! An OTLP/HTTP trace receiver: it takes `POST /v1/traces` bodies in the
//! protobuf encoding, decodes them with the official `opentelemetry-proto`
//! definitions (`ExportTraceServiceRequest`) and keeps every span, so a
//! test can check what processes exported and how their spans link.
//! Anything it cannot decode is answered 400 and counted, never dropped in
//! silence.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message as _;

use crate::error::{Result, io_err};

/// The largest body taken (a batch of spans is far smaller).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One span as received, with ids as lowercase hex (empty for none).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` of the resource that sent it.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Its kind as the protocol numbers it: 1 internal, 2 server, 3 client,
    /// 4 producer, 5 consumer.
    pub kind: i32,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// Its attributes, each value as text (numbers and booleans written out).
    pub attributes: HashMap<String, String>,
    /// The spans it links to, as (trace id, span id).
    pub links: Vec<(String, String)>,
    /// Its status code as the protocol numbers it: 0 unset, 1 ok, 2 error.
    pub status: i32,
}

impl ReceivedSpan {
    /// The attribute's value as text, if it has it.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    refused: usize,
}

/// A receiver listening on a free loopback port until dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
}

impl OtlpReceiver {
    /// Starts listening on `127.0.0.1`, on a port of the system's choosing.
    ///
    /// # Errors
    ///
    /// When the port cannot be bound.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind an OTLP receiver"))?;
        let addr = listener
            .local_addr()
            .map_err(io_err("read the receiver's address"))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("set the listener non-blocking"))?;
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (Arc::clone(&received), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || serve(stream, &shared));
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            addr,
            received,
            stop,
        })
    }

    /// The base URL an exporter is given (`http://127.0.0.1:<port>`); spans
    /// are taken at its `/v1/traces`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    /// How many requests were refused as not OTLP trace protobuf.
    pub fn refused(&self) -> usize {
        self.lock().refused
    }

    /// Waits up to `within` until `done` holds for the spans received,
    /// and answers them either way.
    pub fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves one connection's requests (HTTP/1.1, kept alive) until it closes.
fn serve(stream: TcpStream, received: &Mutex<Received>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut length = 0_usize;
        let mut content_type = String::new();
        let mut chunked = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(usize::MAX),
                    "content-type" => value.clone_into(&mut content_type),
                    "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                    _ => {}
                }
            }
        }
        if chunked || length > MAX_BODY {
            let _ = respond(&mut writer, 413, "a body of known length up to 16 MiB");
            return;
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, reason) = if method != "POST" || path != "/v1/traces" {
            (404, "only POST /v1/traces is served")
        } else if !content_type.starts_with("application/x-protobuf") {
            (415, "only application/x-protobuf is taken")
        } else {
            match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(request) => {
                    let spans = flatten(request);
                    let mut received = received.lock().unwrap_or_else(PoisonError::into_inner);
                    received.spans.extend(spans);
                    (200, "")
                }
                Err(_) => (400, "not an ExportTraceServiceRequest"),
            }
        };
        if status != 200 {
            received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .refused += 1;
        }
        if respond(&mut writer, status, reason).is_err() {
            return;
        }
    }
}

fn respond(writer: &mut TcpStream, status: u16, reason: &str) -> std::io::Result<()> {
    // An empty `ExportTraceServiceResponse` is zero bytes of protobuf.
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        if status == 200 { "OK" } else { "Refused" },
        if status == 200 {
            "application/x-protobuf"
        } else {
            "text/plain"
        },
        reason.len()
    );
    writer.write_all(head.as_bytes())?;
    writer.write_all(reason.as_bytes())?;
    writer.flush()
}

fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|resource| &resource.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(text)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, kv.value.as_ref().map(text).unwrap_or_default()))
                        .collect(),
                    links: span
                        .links
                        .into_iter()
                        .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                        .collect(),
                    status: span.status.map_or(0, |status| status.code),
                });
            }
        }
    }
    out
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(value)) => value.to_string(),
        Some(any_value::Value::IntValue(value)) => value.to_string(),
        Some(any_value::Value::DoubleValue(value)) => value.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}
