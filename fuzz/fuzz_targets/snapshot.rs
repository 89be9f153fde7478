//! Snapshot restore on arbitrary bytes, into empty stores.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offer_engine::domain::TierThresholds;
use offer_engine::durable::Core;
use offer_engine::experiments::ExperimentBook;
use offer_engine::ledger::Ledger;
use offer_engine::store::MemberStore;

fuzz_target!(|data: &[u8]| {
    let core = Core {
        members: MemberStore::new(),
        ledger: Ledger::new(1000),
        thresholds: TierThresholds::default(),
        experiments: ExperimentBook::default(),
        learner: Default::default(),
    };
    let _ = core.restore(data);
});
