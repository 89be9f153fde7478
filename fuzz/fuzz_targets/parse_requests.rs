//! Every JSON request parser at the HTTP edge, on arbitrary bytes: the first
//! byte picks the parser, the rest is the body. Errors are fine; a panic is not.
#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use offer_engine::service::campaigns::CampaignDto;
use offer_engine::domain::{Day, MemberRecord};
use offer_engine::events::{MemberEventDto, OutcomeBody};
use offer_engine::parse::{from_json, parse_offer_request, OfferRequestDto};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    // A fixed clock keeps runs reproducible.
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
    match which % 5 {
        0 => {
            if let Ok(dto) = from_json::<OfferRequestDto>(body) {
                let _ = dto.into_domain(now);
            }
            // The handler's path: every field error at once.
            if let Err(errs) = parse_offer_request(body, now) {
                assert!(!errs.is_empty());
            }
        }
        1 => {
            let _ = from_json::<OutcomeBody>(body);
        }
        2 => {
            if let Ok(ev) = from_json::<MemberEventDto>(body) {
                let _ = ev.into_change(Day::of(now));
            }
        }
        3 => {
            if let Ok(dto) = from_json::<CampaignDto>(body) {
                let _ = dto.into_campaign(now);
            }
        }
        _ => {
            if let Ok(rec) = from_json::<MemberRecord>(body) {
                let _ = rec.to_member();
            }
        }
    }
});
