//! A JSON-subprotocol client frame, decoded as the session decodes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgrid::protocol::codec::Format;

fuzz_target!(|data: &[u8]| {
    pushgrid::fuzzing::client_frame(Format::Json, data);
});
