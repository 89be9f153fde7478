//! Snapshot restore on arbitrary bytes, into an empty state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offer_engine::domain::TierThresholds;
use offer_engine::state::{State, StateSettings};

fuzz_target!(|data: &[u8]| {
    let state = State::new(StateSettings {
        max_decisions: 1000,
        thresholds: TierThresholds::default(),
        learning: Default::default(),
    });
    let _ = state.restore(data, 0);
});
