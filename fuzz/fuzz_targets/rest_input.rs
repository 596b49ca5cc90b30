//! A REST entry path and body, parsed as the handlers parse them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pushgrid::fuzzing::rest_input(data);
});
