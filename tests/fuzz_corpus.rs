//! Replays the fuzz corpus (`fuzz/corpus/<target>/`, seeds and every input
//! a fuzzing run kept) through the same entry points the fuzz targets use,
//! so `cargo test` proves on every run that none of them panics the node's
//! parsers. The fuzzing itself is `cargo fuzz run <target>` (see `.ci/run`).

use std::path::Path;

use pushgrid::fuzzing::{client_frame, rest_input};
use pushgrid::protocol::codec::Format;

fn replay(target: &str, run: impl Fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        count += 1;
    }
    count
}

#[test]
fn the_json_frame_corpus_decodes_without_panicking() {
    assert!(replay("ws_json_frame", |data| client_frame(Format::Json, data)) > 0);
}

#[test]
fn the_msgpack_frame_corpus_decodes_without_panicking() {
    assert!(replay("ws_msgpack_frame", |data| client_frame(Format::MsgPack, data)) > 0);
}

#[test]
fn the_rest_corpus_parses_without_panicking() {
    assert!(replay("rest_input", rest_input) > 0);
}
