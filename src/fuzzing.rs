//! The entry points the fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`) drive: every parser that untrusted bytes reach,
//! run the way the node runs them. Each must return, never panic.

use crate::grid::{parse_key, JsonValue};
use crate::protocol::ws::{decode_request, ClientOp, Format};
use crate::web::rest::{parse_entry_path, parse_value};

/// The nesting limit the node uses by default.
const MAX_DEPTH: usize = 64;

/// A client frame: decoded, and its parts checked and converted as the
/// session does before touching the grid.
pub fn client_frame(format: Format, data: &[u8]) {
    let Ok(request) = decode_request(format, data, MAX_DEPTH) else {
        return;
    };
    match request.op {
        ClientOp::Put { key, value, .. } => {
            let _ = parse_key(&key);
            let stored = JsonValue::from_value(&value);
            // What is stored must encode again in both formats.
            let _ = Format::Json.encode(&stored);
            let _ = Format::MsgPack.encode(&stored);
        }
        ClientOp::Get { key, .. } | ClientOp::Remove { key, .. } => {
            let _ = parse_key(&key);
        }
        ClientOp::Subscribe { filter, resume, .. } => {
            let _ = crate::push::filter::Filter::from_spec(&filter);
            if let Some(resume) = resume {
                let _ = resume.parse_positions();
            }
        }
        ClientOp::Unsubscribe { .. } | ClientOp::Ping | ClientOp::Auth { .. } => {}
    }
}

/// The first line as an entry path (`/api/v1/caches/{cache}/entries/{key}`
/// once prefixed), the rest as a body.
pub fn rest_input(data: &[u8]) {
    let (line, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(path) = std::str::from_utf8(line) {
        let _ = parse_entry_path(path);
        let _ = parse_entry_path(&format!("/api/v1/caches/{path}"));
    }
    if let Ok(value) = parse_value(body, MAX_DEPTH) {
        let _ = Format::MsgPack.encode(&value);
    }
}
