//! The airport table: real IATA codes with country and coordinates, used to
//! tell domestic from international routes and to measure route length.
//!
//! The table is small and compiled in; a code outside it is rejected at the
//! edge with a message naming the field, so the core only sees airports whose
//! country and position it knows.

use crate::domain::Iata;

/// One airport.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Airport {
    /// IATA code.
    pub code: Iata,
    /// City served.
    pub city: &'static str,
    /// ISO 3166 country code.
    pub country: &'static str,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Relative weight of members living near it, for the generator.
    pub member_weight: f64,
}

macro_rules! ap {
    ($code:literal, $city:literal, $cc:literal, $lat:expr, $lon:expr, $w:expr) => {
        Airport {
            code: Iata::from_bytes(*$code),
            city: $city,
            country: $cc,
            lat: $lat,
            lon: $lon,
            member_weight: $w,
        }
    };
}

/// Every airport the engine knows, sorted by code.
pub static AIRPORTS: &[Airport] = &[
    ap!(b"AKL", "Auckland", "NZ", -37.008, 174.792, 0.0),
    ap!(b"AMS", "Amsterdam", "NL", 52.310, 4.768, 0.0),
    ap!(b"BKK", "Bangkok", "TH", 13.690, 100.750, 0.2),
    ap!(b"CAN", "Guangzhou", "CN", 23.392, 113.299, 7.0),
    ap!(b"CDG", "Paris", "FR", 49.010, 2.548, 0.1),
    ap!(b"CGO", "Zhengzhou", "CN", 34.520, 113.841, 1.5),
    ap!(b"CKG", "Chongqing", "CN", 29.719, 106.642, 3.0),
    ap!(b"CSX", "Changsha", "CN", 28.189, 113.220, 1.5),
    ap!(b"CTU", "Chengdu", "CN", 30.578, 103.947, 4.0),
    ap!(b"DLC", "Dalian", "CN", 38.966, 121.539, 1.0),
    ap!(b"DXB", "Dubai", "AE", 25.253, 55.366, 0.1),
    ap!(b"FOC", "Fuzhou", "CN", 25.935, 119.663, 1.0),
    ap!(b"FRA", "Frankfurt", "DE", 50.033, 8.571, 0.1),
    ap!(b"HAK", "Haikou", "CN", 19.935, 110.459, 1.0),
    ap!(b"HGH", "Hangzhou", "CN", 30.229, 120.434, 3.5),
    ap!(b"HKG", "Hong Kong", "HK", 22.309, 113.915, 1.5),
    ap!(b"HND", "Tokyo", "JP", 35.549, 139.780, 0.3),
    ap!(b"HRB", "Harbin", "CN", 45.623, 126.250, 1.0),
    ap!(b"ICN", "Seoul", "KR", 37.460, 126.441, 0.3),
    ap!(b"JFK", "New York", "US", 40.640, -73.779, 0.1),
    ap!(b"KMG", "Kunming", "CN", 25.102, 102.929, 2.5),
    ap!(b"KUL", "Kuala Lumpur", "MY", 2.746, 101.710, 0.1),
    ap!(b"LAX", "Los Angeles", "US", 33.943, -118.408, 0.1),
    ap!(b"LHR", "London", "GB", 51.470, -0.454, 0.1),
    ap!(b"MEL", "Melbourne", "AU", -37.669, 144.841, 0.1),
    ap!(b"NGB", "Ningbo", "CN", 29.827, 121.462, 0.8),
    ap!(b"NKG", "Nanjing", "CN", 31.742, 118.862, 2.0),
    ap!(b"NRT", "Tokyo", "JP", 35.772, 140.393, 0.2),
    ap!(b"PEK", "Beijing", "CN", 40.080, 116.585, 9.0),
    ap!(b"PKX", "Beijing", "CN", 39.509, 116.411, 5.0),
    ap!(b"PVG", "Shanghai", "CN", 31.144, 121.808, 8.0),
    ap!(b"SFO", "San Francisco", "US", 37.619, -122.375, 0.1),
    ap!(b"SHA", "Shanghai", "CN", 31.198, 121.336, 5.0),
    ap!(b"SHE", "Shenyang", "CN", 41.640, 123.483, 1.2),
    ap!(b"SIN", "Singapore", "SG", 1.364, 103.991, 0.3),
    ap!(b"SJW", "Shijiazhuang", "CN", 38.281, 114.697, 0.8),
    ap!(b"SYD", "Sydney", "AU", -33.946, 151.177, 0.1),
    ap!(b"SYX", "Sanya", "CN", 18.303, 109.412, 0.8),
    ap!(b"SZX", "Shenzhen", "CN", 22.639, 113.811, 6.5),
    ap!(b"TAO", "Qingdao", "CN", 36.362, 120.088, 1.5),
    ap!(b"TFU", "Chengdu", "CN", 30.319, 104.445, 1.5),
    ap!(b"TNA", "Jinan", "CN", 36.857, 117.216, 0.8),
    ap!(b"TPE", "Taipei", "TW", 25.080, 121.232, 0.5),
    ap!(b"TSN", "Tianjin", "CN", 39.124, 117.346, 1.2),
    ap!(b"URC", "Urumqi", "CN", 43.907, 87.474, 1.0),
    ap!(b"WUH", "Wuhan", "CN", 30.784, 114.208, 2.5),
    ap!(b"XIY", "Xi'an", "CN", 34.447, 108.752, 2.5),
    ap!(b"XMN", "Xiamen", "CN", 24.544, 118.128, 2.0),
    ap!(b"YYZ", "Toronto", "CA", 43.677, -79.631, 0.1),
];

/// Looks a code up in the table.
pub fn lookup(code: Iata) -> Option<&'static Airport> {
    AIRPORTS
        .binary_search_by(|a| a.code.cmp(&code))
        .ok()
        .map(|i| &AIRPORTS[i])
}

/// Great-circle (haversine) distance between two known airports, km.
pub fn distance_km(a: Iata, b: Iata) -> Option<f64> {
    let (a, b) = (lookup(a)?, lookup(b)?);
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dp = p2 - p1;
    let dl = (b.lon - a.lon).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    Some(2.0 * 6371.0 * h.sqrt().asin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(AIRPORTS.windows(2).all(|w| w[0].code < w[1].code));
    }

    #[test]
    fn pek_sha_is_about_1080_km() {
        let d = distance_km(Iata::parse("PEK").unwrap(), Iata::parse("SHA").unwrap()).unwrap();
        assert!((1050.0..1110.0).contains(&d), "{d}");
    }

    #[test]
    fn bad_codes_are_rejected() {
        assert!(Iata::parse("pek").is_err());
        assert!(Iata::parse("PE").is_err());
        assert!(Iata::parse("ZZZ").is_err());
    }
}
