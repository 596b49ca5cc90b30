//! `pushgrid watch`: follows a cache over its event stream (SSE) and prints
//! the entries, then every change, one line each, as they arrive. When the
//! connection drops (the node restarts, the network hiccups) it reconnects
//! with backoff and resumes from the last position it printed, so nothing
//! is missed or printed twice; a node that cannot resume (history gone, or
//! a new run of the node) sends the state afresh, printed after a `reset`
//! line.

use std::io::{Read, Write};
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::encode;
use super::rest::{refusal, ClientError, Node, Reply};
use crate::protocol::fallback::{SseMessage, SseReader};

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The node sends a heartbeat every 15 s by default: three missed and the
/// connection is taken for dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `KIND<TAB>KEY<TAB>VERSION<TAB>VALUE`
    Columns,
    /// `{"type":"snapshot","entry":{...}}`, `{"type":"event","event":{...}}`,
    /// `{"type":"reset"}`
    Json,
}

#[derive(Deserialize)]
struct SnapshotData<'a> {
    #[serde(borrow)]
    entries: Vec<Entry<'a>>,
    #[serde(default)]
    reset: bool,
}

#[derive(Deserialize)]
struct Entry<'a> {
    key: &'a str,
    version: u64,
    #[serde(borrow)]
    value: &'a RawValue,
}

#[derive(Deserialize)]
struct Event<'a> {
    kind: &'a str,
    key: &'a str,
    version: u64,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
}

/// Why a stream stopped.
enum Stopped {
    /// The connection dropped or went silent: resume.
    Dropped(String),
    /// The cache was deleted: nothing more will come.
    CacheDeleted,
}

/// Follows `cache` (with `filter`, a query string) until its cache is
/// deleted or the node refuses the stream.
pub fn watch(
    node: &Node,
    cache: &str,
    filter: &str,
    format: Format,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let path = format!("/api/v1/caches/{}/events?{filter}", encode(cache));
    let mut printer = Printer {
        out,
        format,
        position: None,
        in_snapshot: false,
        printed: 0,
    };
    let mut backoff = BACKOFF_START;
    loop {
        let printed = printer.printed;
        let stopped = follow(node, &path, &mut printer)?;
        if printer.printed > printed {
            // That connection worked: the next failure starts over.
            backoff = BACKOFF_START;
        }
        match stopped {
            Stopped::CacheDeleted => {
                eprintln!("pushgrid: cache {cache} was deleted");
                return Ok(());
            }
            Stopped::Dropped(reason) => {
                eprintln!("pushgrid: {reason}; reconnecting in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One connection: opened (resuming from what was printed), read until it
/// stops.
fn follow(node: &Node, path: &str, printer: &mut Printer<'_, impl Write>) -> Result<Stopped, ClientError> {
    let resume_from: Vec<(&str, &str)> = printer
        .position
        .as_deref()
        .map(|position| ("Last-Event-ID", position))
        .into_iter()
        .collect();
    let response = match node.open("GET", path, &resume_from, None, SILENCE_LIMIT) {
        Ok(response) => response,
        Err(err) => return Ok(Stopped::Dropped(err.to_string())),
    };
    if !(200..300).contains(&response.status) {
        let status = response.status;
        let text = response.body.text().unwrap_or_default();
        let error = refusal(&Reply { status, text });
        // A node at its connection limit or shutting down may take it later.
        return if status >= 500 {
            Ok(Stopped::Dropped(error.to_string()))
        } else {
            Err(error)
        };
    }
    let mut body = response.body;
    let mut reader = SseReader::default();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = match body.read(&mut chunk) {
            Ok(0) => return Ok(Stopped::Dropped("the node ended the stream".into())),
            Ok(read) => read,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Stopped::Dropped(format!(
                    "nothing from the node for {SILENCE_LIMIT:?}"
                )))
            }
            Err(err) => return Ok(Stopped::Dropped(format!("the stream broke: {err}"))),
        };
        for message in reader.feed(&chunk[..read]) {
            if message.event == "cache_deleted" {
                return Ok(Stopped::CacheDeleted);
            }
            printer.print(&message)?;
        }
    }
}

struct Printer<'a, W: Write> {
    out: &'a mut W,
    format: Format,
    /// The token of the last position printed in full: where to resume.
    position: Option<String>,
    /// Between the first and the `done` message of a snapshot.
    in_snapshot: bool,
    /// Messages printed so far.
    printed: u64,
}

impl<W: Write> Printer<'_, W> {
    fn print(&mut self, message: &SseMessage) -> Result<(), ClientError> {
        let unexpected =
            |e: serde_json::Error| ClientError::Unexpected(format!("a message that does not parse: {e}"));
        match message.event.as_str() {
            "snapshot" => {
                let data: SnapshotData = serde_json::from_str(&message.data).map_err(unexpected)?;
                if data.reset && !self.in_snapshot {
                    match self.format {
                        Format::Columns => writeln!(self.out, "reset")?,
                        Format::Json => writeln!(self.out, r#"{{"type":"reset"}}"#)?,
                    }
                }
                self.in_snapshot = message.id.is_none();
                for entry in &data.entries {
                    match self.format {
                        Format::Columns => writeln!(
                            self.out,
                            "snapshot\t{}\t{}\t{}",
                            entry.key,
                            entry.version,
                            entry.value.get()
                        )?,
                        Format::Json => writeln!(
                            self.out,
                            r#"{{"type":"snapshot","entry":{{"key":{},"version":{},"value":{}}}}}"#,
                            serde_json::to_string(entry.key).expect("a key encodes"),
                            entry.version,
                            entry.value.get()
                        )?,
                    }
                }
            }
            "event" => match self.format {
                Format::Columns => {
                    let event: Event = serde_json::from_str(&message.data).map_err(unexpected)?;
                    let value = event.value.map_or("", RawValue::get);
                    writeln!(
                        self.out,
                        "{}\t{}\t{}\t{value}",
                        event.kind, event.key, event.version
                    )?;
                }
                Format::Json => writeln!(self.out, r#"{{"type":"event","event":{}}}"#, message.data)?,
            },
            _ => {}
        }
        if message.id.is_some() {
            self.position.clone_from(&message.id);
        }
        self.printed += 1;
        self.out.flush()?;
        Ok(())
    }
}
