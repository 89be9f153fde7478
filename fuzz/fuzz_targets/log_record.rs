//! The event-log record decoder on arbitrary bytes (a corrupt or hostile
//! payload that passed the frame checksum). Whatever decodes must re-encode
//! to bytes that decode to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offer_engine::state::LogRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = LogRecord::decode(data) {
        let again = LogRecord::decode(&rec.encode()).expect("re-encoded record decodes");
        // NaN fields compare unequal; compare the encodings instead.
        assert_eq!(again.encode(), rec.encode());
    }
});
