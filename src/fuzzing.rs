//! The entry points the fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`) drive: every parser that untrusted bytes reach,
//! run the way the node runs them. Each must return, never panic.

use crate::auth::Access;
use crate::protocol::codec::Format;
use crate::protocol::decode::decode_request;
use crate::web::command::{Command, GridCommand};
use crate::web::rest::{parse_entry_path, parse_value};

/// The nesting limit the node uses by default.
const MAX_DEPTH: usize = 64;

/// A client frame: decoded and turned into a command as the session does
/// before touching the grid; what would be echoed or stored must encode in
/// both formats.
pub fn client_frame(format: Format, data: &[u8]) {
    let Ok(request) = decode_request(format, data, MAX_DEPTH) else {
        return;
    };
    if let Some(id) = &request.id {
        let _ = Format::Json.encode(id);
        let _ = Format::MsgPack.encode(id);
    }
    if let Ok(Command::Grid(GridCommand::Put { value, .. })) = Command::from_op(request.op, &Access::Open) {
        let _ = Format::Json.encode(&value);
        let _ = Format::MsgPack.encode(&value);
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
