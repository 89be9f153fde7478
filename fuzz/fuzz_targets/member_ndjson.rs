//! The member NDJSON reader, line by line, on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offer_engine::state::members::parse_member_line;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = parse_member_line(line);
    }
});
