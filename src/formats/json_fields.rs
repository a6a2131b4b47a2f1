//! A strict reader for field formats' JSON objects (DORA, France Travail):
//! only known keys, typed values, every violation collected with its JSON
//! pointer and rule, and never the value itself in a message.

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::error::{Error, Violation};
use crate::model::ids::{ValueError, shape_of};

/// Escapes a member name for a JSON pointer (RFC 6901).
pub(crate) fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The JSON type of a value, for messages that must not repeat the value.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One JSON object being read, with its pointer.
pub(crate) struct Fields<'v> {
    map: &'v Map<String, Value>,
    pointer: String,
}

impl<'v> Fields<'v> {
    /// The member, unless absent or `null`.
    pub(crate) fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// Whether the member holds something: not absent, not `null`, not `""`.
    pub(crate) fn is_set(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|value| !is_absent(value))
    }

    /// The JSON pointer of a member.
    pub(crate) fn pointer_to(&self, key: &str) -> String {
        format!("{}/{}", self.pointer, escape(key))
    }
}

/// Reads JSON members by name and collects every violation at its pointer,
/// describing shapes only: the adapters fail once, listing all of them.
#[derive(Default)]
pub(crate) struct Reader {
    violations: Vec<Violation>,
}

impl Reader {
    /// Records a violation.
    pub(crate) fn push(&mut self, violation: Violation) {
        self.violations.push(violation);
    }

    /// Records a missing required member.
    pub(crate) fn required(&mut self, pointer: &str, what: &str) {
        let pointer = if pointer.starts_with('/') {
            pointer.to_owned()
        } else {
            format!("/{}", escape(pointer))
        };
        self.push(Violation::new(
            pointer,
            "required",
            format!("{what}, found none"),
        ));
    }

    /// Opens an object, listing every member not in `known` (sorted, so that
    /// reports are stable) as `unknown-field`.
    pub(crate) fn object<'v>(
        &mut self,
        value: &'v Value,
        pointer: &str,
        known: &[&str],
    ) -> Option<Fields<'v>> {
        let Value::Object(map) = value else {
            self.push(Violation::new(
                pointer,
                "type",
                format!("an object, found {}", json_type(value)),
            ));
            return None;
        };
        let fields = Fields {
            map,
            pointer: pointer.to_owned(),
        };
        let mut unknown: Vec<&String> = map
            .keys()
            .filter(|key| !known.contains(&key.as_str()))
            .collect();
        unknown.sort();
        for key in unknown {
            self.push(Violation::new(
                fields.pointer_to(key),
                "unknown-field",
                "no such member in this format",
            ));
        }
        Some(fields)
    }

    /// A string member; `null` and `""` are absent.
    pub(crate) fn text(
        &mut self,
        fields: &Fields<'_>,
        key: &str,
        max_chars: usize,
    ) -> Option<String> {
        let text = self.raw_text(fields, key)?;
        self.check_length(fields.pointer_to(key), text, max_chars)
            .then(|| text.to_owned())
    }

    /// A string member that must be present and non-empty.
    pub(crate) fn required_text(
        &mut self,
        fields: &Fields<'_>,
        key: &str,
        max_chars: usize,
    ) -> Option<String> {
        if !fields.is_set(key) && matches!(fields.get(key), None | Some(Value::String(_))) {
            self.required(&fields.pointer_to(key), "a non-empty text");
            return None;
        }
        self.text(fields, key, max_chars)
    }

    /// A string member turned into a typed value by its parser; the parser's
    /// rule names the violation.
    pub(crate) fn parsed<T>(
        &mut self,
        fields: &Fields<'_>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Option<T> {
        let text = self.raw_text(fields, key)?;
        match parse(text) {
            Ok(value) => Some(value),
            Err(error) => {
                self.push(Violation::new(
                    fields.pointer_to(key),
                    error.rule,
                    format!("{}, found {}", error.expected, error.found),
                ));
                None
            }
        }
    }

    /// An ISO 8601 calendar date member (`YYYY-MM-DD`).
    pub(crate) fn date(&mut self, fields: &Fields<'_>, key: &str) -> Option<NaiveDate> {
        self.parsed(fields, key, parse_date)
    }

    /// An array of strings; `null` is an empty array and `""` items are
    /// skipped; items of another type or over the length are violations.
    pub(crate) fn texts(
        &mut self,
        fields: &Fields<'_>,
        key: &str,
        max_chars: usize,
    ) -> Vec<String> {
        let mut texts = Vec::new();
        for (pointer, item) in self.array_items(fields, key) {
            match item {
                Ok(text) => {
                    if self.check_length(pointer, text, max_chars) {
                        texts.push(text.to_owned());
                    }
                }
                Err(violation) => self.push(violation),
            }
        }
        texts
    }

    /// An array of codes, each turned into its value by `table`; an unknown
    /// code is an `enum` violation at its index.
    pub(crate) fn codes<T: Copy>(
        &mut self,
        fields: &Fields<'_>,
        key: &str,
        table: &[(&str, T)],
    ) -> Vec<T> {
        let mut values = Vec::new();
        for (pointer, item) in self.array_items(fields, key) {
            let text = match item {
                Ok(text) => text,
                Err(violation) => {
                    self.push(violation);
                    continue;
                }
            };
            match table.iter().find(|(code, _)| *code == text) {
                Some((_, value)) => values.push(*value),
                None => {
                    let expected: Vec<&str> = table.iter().map(|(code, _)| *code).collect();
                    self.push(Violation::new(
                        pointer,
                        "enum",
                        format!("one of {}, found another value", expected.join(", ")),
                    ));
                }
            }
        }
        values
    }

    /// The items of an array member (`null` is empty; `""` items are skipped),
    /// each with its pointer: a string, or the violation of another type. The
    /// caller pushes violations so that they stay in document order.
    fn array_items<'v>(
        &mut self,
        fields: &Fields<'v>,
        key: &str,
    ) -> Vec<(String, Result<&'v str, Violation>)> {
        let pointer = fields.pointer_to(key);
        let items = match fields.get(key) {
            None => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.push(Violation::new(
                    pointer,
                    "type",
                    format!("an array of strings, found {}", json_type(other)),
                ));
                return Vec::new();
            }
        };
        items
            .iter()
            .enumerate()
            .filter(|(_, item)| item.as_str() != Some(""))
            .map(|(index, item)| {
                let item_pointer = format!("{pointer}/{index}");
                let result = match item {
                    Value::String(text) => Ok(text.as_str()),
                    other => Err(Violation::new(
                        item_pointer.clone(),
                        "type",
                        format!("a string, found {}", json_type(other)),
                    )),
                };
                (item_pointer, result)
            })
            .collect()
    }

    /// A non-negative whole number member.
    pub(crate) fn count(&mut self, fields: &Fields<'_>, key: &str) -> Option<u64> {
        let value = fields.get(key)?;
        let count = value.as_u64();
        if count.is_none() {
            let found = match value {
                Value::Number(_) => "a negative or fractional number",
                other => json_type(other),
            };
            self.push(Violation::new(
                fields.pointer_to(key),
                "type",
                format!("a whole number of 0 or more, or null, found {found}"),
            ));
        }
        count
    }

    /// A boolean member (`null` is absent).
    pub(crate) fn boolean(&mut self, fields: &Fields<'_>, key: &str) -> Option<bool> {
        let value = fields.get(key)?;
        let flag = value.as_bool();
        if flag.is_none() {
            self.push(Violation::new(
                fields.pointer_to(key),
                "type",
                format!("a boolean or null, found {}", json_type(value)),
            ));
        }
        flag
    }

    fn raw_text<'v>(&mut self, fields: &Fields<'v>, key: &str) -> Option<&'v str> {
        match fields.get(key)? {
            Value::String(text) if text.is_empty() => None,
            Value::String(text) => Some(text),
            other => {
                self.push(Violation::new(
                    fields.pointer_to(key),
                    "type",
                    format!("a string or null, found {}", json_type(other)),
                ));
                None
            }
        }
    }

    fn check_length(&mut self, pointer: String, text: &str, max_chars: usize) -> bool {
        let count = text.chars().count();
        if count <= max_chars {
            return true;
        }
        self.push(Violation::new(
            pointer,
            "maxLength",
            format!("at most {max_chars} characters, found {count}"),
        ));
        false
    }

    /// Fails with every violation collected, if any.
    pub(crate) fn finish(&mut self) -> Result<(), Error> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(std::mem::take(&mut self.violations)))
        }
    }

    /// The error for what was collected (for an early stop).
    pub(crate) fn into_error(self) -> Error {
        Error::Invalid(self.violations)
    }
}

/// Parses an ISO 8601 calendar date, `YYYY-MM-DD` exactly.
pub(crate) fn parse_date(text: &str) -> Result<NaiveDate, ValueError> {
    const EXPECTED: &str = "an ISO 8601 date (YYYY-MM-DD)";
    let shaped = text.len() == 10
        && text
            .bytes()
            .enumerate()
            .all(|(position, byte)| match position {
                4 | 7 => byte == b'-',
                _ => byte.is_ascii_digit(),
            });
    let date = shaped
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten();
    date.ok_or_else(|| ValueError {
        rule: "date-format",
        expected: EXPECTED,
        found: if shaped {
            "a day that does not exist".to_owned()
        } else {
            shape_of(text)
        },
    })
}

/// Whether a member counts as absent: `null` or the empty string.
pub(crate) fn is_absent(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_strict_iso_and_errors_show_shapes() {
        assert!(parse_date("2026-12-07").is_ok());
        let error = parse_date("07/12/2026").expect_err("French order");
        assert_eq!(error.rule, "date-format");
        assert!(!error.to_string().contains("2026"));
        assert_eq!(
            parse_date("2026-02-30").expect_err("no such day").found,
            "a day that does not exist"
        );
        assert!(parse_date("2026-1-07").is_err());
    }
}
