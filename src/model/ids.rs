//! Identifiers and small values parsed at the edge: once built, they are right.
//!
//! Parse errors describe the shape of what was found, never the value itself,
//! because the value may be personal data.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused by its parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: expected {expected}, found {found}")]
pub struct ValueError {
    /// Stable rule name (for example `siret-checksum`).
    pub rule: &'static str,
    /// What a valid value looks like.
    pub expected: &'static str,
    /// What was found, described without repeating it.
    pub found: String,
}

impl ValueError {
    fn new(rule: &'static str, expected: &'static str, found: impl Into<String>) -> Self {
        Self {
            rule,
            expected,
            found: found.into(),
        }
    }
}

/// Describes a text by its shape only (length and character classes), for error messages.
pub(crate) fn shape_of(text: &str) -> String {
    let count = text.chars().count();
    let digits = text.chars().filter(char::is_ascii_digit).count();
    if count == 0 {
        "an empty string".to_owned()
    } else if digits == count {
        format!("{count} digits")
    } else {
        format!("{count} characters of which {digits} digits")
    }
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Declares a text newtype built only by its `parse` function: serde goes
/// through `parse`, so a decoded value is always a checked one.
macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::model::ids::ValueError;
            fn try_from(value: String) -> Result<Self, $crate::model::ids::ValueError> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use string_newtype;

string_newtype!(
    /// SIRET: 14 digits whose Luhn sum is a multiple of 10 (La Poste's
    /// establishments, SIREN 356000000, use a digit sum multiple of 5 instead).
    Siret
);

impl Siret {
    /// Parses a SIRET, accepting the spaces people type between groups.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        const EXPECTED: &str = "14 digits with a valid Luhn key";
        let compact: String = text.chars().filter(|c| *c != ' ').collect();
        if compact.len() != 14 || !all_digits(&compact) {
            return Err(ValueError::new("siret-format", EXPECTED, shape_of(text)));
        }
        let digits: Vec<u32> = compact.bytes().map(|b| u32::from(b - b'0')).collect();
        let valid = if compact.starts_with("356000000") {
            digits.iter().sum::<u32>() % 5 == 0
        } else {
            luhn_sum(&digits).is_multiple_of(10)
        };
        if !valid {
            return Err(ValueError::new(
                "siret-checksum",
                EXPECTED,
                "14 digits with a wrong Luhn key",
            ));
        }
        Ok(Self(compact))
    }

    /// The SIREN: the first nine digits, naming the legal unit.
    pub fn siren(&self) -> &str {
        &self.0[..9]
    }
}

fn luhn_sum(digits: &[u32]) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &digit)| {
            if position % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum()
}

string_newtype!(
    /// France Travail number (identifiant France Travail): 11 digits.
    FranceTravailNumber
);

impl FranceTravailNumber {
    /// Parses an 11-digit France Travail number.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        if text.len() == 11 && all_digits(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ValueError::new(
                "france-travail-number-format",
                "11 digits",
                shape_of(text),
            ))
        }
    }
}

string_newtype!(
    /// NIR (numéro de sécurité sociale): 13 characters and a two-digit key equal
    /// to 97 minus the number modulo 97 (Corsica's 2A and 2B count as 19 and 18).
    Nir
);

impl Nir {
    /// Parses a NIR, accepting spaces between groups.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        const EXPECTED: &str = "15 characters (13 + a 2-digit key), digits except 2A/2B";
        let compact: String = text
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if compact.len() != 15 || !compact.is_ascii() {
            return Err(ValueError::new("nir-format", EXPECTED, shape_of(text)));
        }
        let (body, key) = compact.split_at(13);
        let numeric_body = match &body[5..7] {
            "2A" => format!("{}19{}", &body[..5], &body[7..]),
            "2B" => format!("{}18{}", &body[..5], &body[7..]),
            _ => body.to_owned(),
        };
        if !all_digits(&numeric_body) || !all_digits(key) || !matches!(&body[..1], "1" | "2") {
            return Err(ValueError::new("nir-format", EXPECTED, shape_of(text)));
        }
        let (Ok(number), Ok(key)) = (numeric_body.parse::<u64>(), key.parse::<u64>()) else {
            return Err(ValueError::new("nir-format", EXPECTED, shape_of(text)));
        };
        if 97 - number % 97 != key {
            return Err(ValueError::new(
                "nir-checksum",
                EXPECTED,
                "15 characters with a wrong key",
            ));
        }
        Ok(Self(compact))
    }
}

string_newtype!(
    /// French postal code: five digits.
    PostalCode
);

impl PostalCode {
    /// Parses a five-digit postal code.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        if text.len() == 5 && all_digits(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ValueError::new(
                "postal-code-format",
                "5 digits",
                shape_of(text),
            ))
        }
    }
}

string_newtype!(
    /// INSEE code of a commune: five characters, digits except Corsica's 2A/2B.
    InseeCode
);

impl InseeCode {
    /// Parses an INSEE commune code.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let upper = text.to_ascii_uppercase();
        let valid = upper.len() == 5
            && upper.is_ascii()
            && (all_digits(&upper[..2]) || matches!(&upper[..2], "2A" | "2B"))
            && all_digits(&upper[2..]);
        if valid {
            Ok(Self(upper))
        } else {
            Err(ValueError::new(
                "insee-code-format",
                "5 characters: digits, or 2A/2B followed by 3 digits",
                shape_of(text),
            ))
        }
    }
}

string_newtype!(
    /// An email address: one `@`, a dot in the domain, no spaces, at most 254 characters.
    Email
);

impl Email {
    /// Parses an email address (a sanity check, not a full RFC 5322 parser).
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        const EXPECTED: &str = "an address like name@domain.tld";
        let trimmed = text.trim();
        let valid = trimmed.len() <= 254
            && !trimmed.chars().any(char::is_whitespace)
            && trimmed.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if valid {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(ValueError::new("email-format", EXPECTED, shape_of(text)))
        }
    }
}

string_newtype!(
    /// A phone number, kept as digits with an optional leading `+` (spaces, dots and dashes removed).
    Phone
);

impl Phone {
    /// Parses a phone number of 6 to 15 digits.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let trimmed = text.trim();
        let (plus, rest) = match trimmed.strip_prefix('+') {
            Some(rest) => ("+", rest),
            None => ("", trimmed),
        };
        let digits: String = rest
            .chars()
            .filter(|c| !matches!(c, ' ' | '.' | '-'))
            .collect();
        if (6..=15).contains(&digits.len()) && all_digits(&digits) {
            Ok(Self(format!("{plus}{digits}")))
        } else {
            Err(ValueError::new(
                "phone-format",
                "6 to 15 digits, optionally after a +",
                shape_of(text),
            ))
        }
    }
}

/// Referral id: a UUID chosen by the sender, the idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReferralId(uuid::Uuid);

impl ReferralId {
    /// Parses a UUID in its hyphenated form.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        if text.len() != 36 {
            return Err(ValueError::new(
                "uuid-format",
                "a hyphenated UUID (36 characters)",
                shape_of(text),
            ));
        }
        uuid::Uuid::parse_str(text).map(Self).map_err(|_| {
            ValueError::new(
                "uuid-format",
                "a hyphenated UUID (36 characters)",
                shape_of(text),
            )
        })
    }

    /// A deterministic id derived from a source-specific key (UUID v5 in
    /// Passerelle's namespace), for formats that carry no UUID of their own.
    pub fn derived(source: &str, key: &str) -> Self {
        let namespace = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"urn:passerelle:referral");
        Self(uuid::Uuid::new_v5(
            &namespace,
            format!("{source}\u{1f}{key}").as_bytes(),
        ))
    }

    /// The UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl From<uuid::Uuid> for ReferralId {
    fn from(value: uuid::Uuid) -> Self {
        Self(value)
    }
}

impl TryFrom<String> for ReferralId {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        Self::parse(&value)
    }
}

impl From<ReferralId> for String {
    fn from(value: ReferralId) -> String {
        value.0.hyphenated().to_string()
    }
}

impl fmt::Display for ReferralId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siret_accepts_a_valid_luhn_key_and_spaces() {
        assert_eq!(
            Siret::parse("812 345 678 00013").map(String::from),
            Ok("81234567800013".to_owned())
        );
        // The shared DORA sample's SIRET is one digit off a valid one.
        assert!(Siret::parse("81234567800012").is_err());
        let siret = Siret::parse("73282932000074").expect("valid SIRET");
        assert_eq!(siret.siren(), "732829320");
    }

    #[test]
    fn siret_refuses_a_wrong_key_and_says_which_rule() {
        let error = Siret::parse("73282932000075").expect_err("wrong key");
        assert_eq!(error.rule, "siret-checksum");
        let error = Siret::parse("7328293200007").expect_err("13 digits");
        assert_eq!(error.rule, "siret-format");
        assert_eq!(error.found, "13 digits");
    }

    #[test]
    fn siret_of_la_poste_uses_the_digit_sum_rule() {
        // 3+5+6+0+0+0+0+0+0+0+0+0+1+0 = 15, a multiple of 5 but not a valid Luhn sum.
        assert!(Siret::parse("35600000000010").is_ok());
    }

    #[test]
    fn nir_checks_its_key_including_corsica() {
        // 1 84 12 76 451 089 → key 97 - (1841276451089 mod 97) = 46.
        assert!(Nir::parse("1 84 12 76 451 089 46").is_ok());
        assert_eq!(
            Nir::parse("184127645108947").expect_err("wrong key").rule,
            "nir-checksum"
        );
        let corsican_body = "2690299341732";
        let key = 97 - "2690219341732".parse::<u64>().expect("digits") % 97;
        let corsican = format!("{}{key:02}", corsican_body.replacen("0299", "022A", 1));
        assert!(Nir::parse(&corsican).is_ok(), "{corsican}");
    }

    #[test]
    fn errors_never_repeat_the_value() {
        let secret = "06 12 34 56 78 90 12 34";
        let error = Phone::parse(secret).expect_err("too long");
        assert!(!error.to_string().contains("12 34"));
        let error = Email::parse("aicha.bensaid@example").expect_err("no dot");
        assert!(!error.to_string().contains("bensaid"));
    }

    #[test]
    fn small_values_parse() {
        assert_eq!(
            Phone::parse("06 12.34-56 78").map(String::from),
            Ok("0612345678".to_owned())
        );
        assert!(PostalCode::parse("93200").is_ok());
        assert!(PostalCode::parse("9320").is_err());
        assert!(InseeCode::parse("2a004").is_ok());
        assert!(FranceTravailNumber::parse("01234567891").is_ok());
        assert!(FranceTravailNumber::parse("0123456789X").is_err());
        assert_eq!(
            ReferralId::derived("csv", "KX-0001"),
            ReferralId::derived("csv", "KX-0001")
        );
    }
}
