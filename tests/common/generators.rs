//! Proptest generators of valid values, shared by the property tests.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use passerelle::model::ids::{Email, Nir, Phone, Siret};
use proptest::prelude::*;

pub fn siret() -> impl Strategy<Value = Siret> {
    "[0-9]{13}".prop_map(|body| {
        (0..10)
            .find_map(|key| Siret::parse(&format!("{body}{key}")).ok())
            .expect("one key digit makes the Luhn sum right")
    })
}

pub fn nir() -> impl Strategy<Value = Nir> {
    ("[12]", "[0-9]{2}", "0[1-9]|1[0-2]", "[0-9]{8}").prop_map(|(sex, year, month, rest)| {
        let body = format!("{sex}{year}{month}{rest}");
        let key = 97 - body.parse::<u64>().expect("digits") % 97;
        Nir::parse(&format!("{body}{key:02}")).expect("valid NIR")
    })
}

pub fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-zÀ-ÿ' -]{{1,{max}}}"))
        .expect("valid regex")
        .prop_filter("no blank text", |t| !t.trim().is_empty())
}

pub fn date() -> impl Strategy<Value = NaiveDate> {
    (1940..2010_i32, 1..=12_u32, 1..=28_u32)
        .prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).expect("valid date"))
}

pub fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (1_700_000_000_i64..1_900_000_000)
        .prop_map(|s| Utc.timestamp_opt(s, 0).single().expect("valid"))
}

pub fn email() -> impl Strategy<Value = Email> {
    "[a-z]{1,10}\\.[a-z]{1,10}@example\\.(org|fr)"
        .prop_map(|e| Email::parse(&e).expect("valid email"))
}

pub fn phone() -> impl Strategy<Value = Phone> {
    "0[1-9][0-9]{8}".prop_map(|p| Phone::parse(&p).expect("valid phone"))
}
