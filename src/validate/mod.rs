//! Validation at the edge: strict JSON parsing (size, depth, duplicate keys,
//! encoding) and the JSON Schema registry, then typed decoding whose failures
//! are reported as JSON pointers and rules, never as values.

use std::cell::RefCell;
use std::fmt::Write as _;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{Error, Violation};

pub mod schemas;

pub use schemas::{Schema, SchemaName};

/// Size and nesting limits applied to every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single document, in bytes.
    pub max_bytes: u64,
    /// Deepest nesting of objects and arrays.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 1024 * 1024,
            max_depth: 32,
        }
    }
}

/// Parses JSON strictly: refuses documents over the size limit, nesting over
/// the depth limit, duplicate object keys and invalid UTF-8. A leading UTF-8
/// byte order mark is ignored.
pub fn parse_json(bytes: &[u8], limits: &Limits) -> Result<Value, Error> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(Error::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let failure = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let seed = Node {
        depth: 0,
        parent: None,
        limits,
        failure: &failure,
    };
    let result = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    match (result, failure.into_inner()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(failure)) => Err(failure),
        (Err(error), None) => Err(malformed(&error)),
    }
}

fn malformed(error: &serde_json::Error) -> Error {
    let detail = match error.classify() {
        serde_json::error::Category::Eof => "the JSON document ends too early".to_owned(),
        serde_json::error::Category::Io => "the input could not be read".to_owned(),
        _ => {
            // serde_json's syntax messages name tokens, not values ("expected `,` or `}`").
            let text = error.to_string();
            let message = text.split(" at line ").next().unwrap_or("invalid JSON");
            format!("invalid JSON: {message}")
        }
    };
    Error::Malformed {
        detail,
        line: Some(error.line() as u64),
        column: Some(error.column() as u64),
    }
}

/// One step of the path from the root to the value being parsed.
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

struct Path<'a> {
    segment: Segment<'a>,
    parent: Option<&'a Path<'a>>,
}

fn pointer(path: Option<&Path<'_>>) -> String {
    let mut segments = Vec::new();
    let mut cursor = path;
    while let Some(step) = cursor {
        segments.push(&step.segment);
        cursor = step.parent;
    }
    let mut pointer = String::new();
    for segment in segments.into_iter().rev() {
        match segment {
            Segment::Key(key) => {
                let _ = write!(pointer, "/{}", key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Index(index) => {
                let _ = write!(pointer, "/{index}");
            }
        }
    }
    pointer
}

#[derive(Clone, Copy)]
struct Node<'a> {
    depth: usize,
    parent: Option<&'a Path<'a>>,
    limits: &'a Limits,
    failure: &'a RefCell<Option<Error>>,
}

impl Node<'_> {
    fn fail<E: de::Error>(&self, error: Error) -> E {
        *self.failure.borrow_mut() = Some(error);
        E::custom("refused")
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth >= self.limits.max_depth {
            return Err(self.fail(Error::TooDeep {
                limit: self.limits.max_depth,
                pointer: pointer(self.parent),
            }));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        loop {
            let path = Path {
                segment: Segment::Index(items.len()),
                parent: self.parent,
            };
            let child = Node {
                depth: self.depth + 1,
                parent: Some(&path),
                ..self
            };
            match seq.next_element_seed(child)? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = Path {
                segment: Segment::Key(&key),
                parent: self.parent,
            };
            let child = Node {
                depth: self.depth + 1,
                parent: Some(&path),
                ..self
            };
            let value = map.next_value_seed(child)?;
            // One lookup: insert, and refuse if the key was already there.
            match object.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(slot) => {
                    let path = Path {
                        segment: Segment::Key(slot.key()),
                        parent: self.parent,
                    };
                    return Err(self.fail(Error::Invalid(vec![Violation::new(
                        pointer(Some(&path)),
                        "duplicate-key",
                        "each key at most once in an object, found it twice",
                    )])));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// Parses, validates against a schema, and decodes into a typed value; every
/// failure names its JSON pointer and rule.
pub fn decode_document<T: DeserializeOwned>(
    bytes: &[u8],
    schema: SchemaName,
    limits: &Limits,
) -> Result<T, Error> {
    decode_parsed(parse_json(bytes, limits)?, bytes, schema, limits)
}

/// Validates a document parsed from `bytes` and decodes it, consuming the
/// parsed value.
pub fn decode_parsed<T: DeserializeOwned>(
    value: Value,
    bytes: &[u8],
    schema: SchemaName,
    limits: &Limits,
) -> Result<T, Error> {
    schemas::schema(schema).validate(&value)?;
    // Decoding from the owned value moves its strings instead of copying them.
    // A failure (rare once the schema passed: checksums and the like) is
    // located by decoding the document again with path tracking.
    match T::deserialize(value) {
        Ok(typed) => Ok(typed),
        Err(_) => typed(&parse_json(bytes, limits)?),
    }
}

/// Validates a parsed document against a schema and decodes it.
pub fn decode_value<T: DeserializeOwned>(value: &Value, schema: SchemaName) -> Result<T, Error> {
    schemas::schema(schema).validate(value)?;
    typed(value)
}

/// Decodes a value already known to match its schema; value checks (SIRET
/// keys, NIR keys, ...) are reported at their JSON pointer.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, Error> {
    // Fast path: no path tracking. Only a failing document pays for a second
    // pass that records where the failure is.
    if let Ok(typed) = T::deserialize(value) {
        return Ok(typed);
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let pointer = pointer_of(error.path());
        let message = error.inner().to_string();
        // Value parsers say "rule: expected …, found …"; anything else is not
        // echoed, since serde messages can quote the input.
        let (rule, detail) = match message.split_once(": ") {
            Some((rule, detail)) if rule.chars().all(|c| c.is_ascii_lowercase() || c == '-') => {
                (rule.to_owned(), detail.to_owned())
            }
            _ if message.starts_with("schema_version must be") => {
                ("const".to_owned(), message.clone())
            }
            _ => (
                "canonical-model".to_owned(),
                "the value does not fit the canonical model".to_owned(),
            ),
        };
        Error::Invalid(vec![Violation::new(pointer, rule, detail)])
    })
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => {
                let _ = write!(pointer, "/{index}");
            }
            serde_path_to_error::Segment::Map { key } => {
                let _ = write!(pointer, "/{}", key.replace('~', "~0").replace('/', "~1"));
            }
            serde_path_to_error::Segment::Enum { variant } => {
                let _ = write!(pointer, "/{variant}");
            }
            serde_path_to_error::Segment::Unknown => pointer.push_str("/?"),
        }
    }
    pointer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_with_their_pointer() {
        let error = parse_json(br#"{"a": {"b": 1, "b": 2}}"#, &Limits::default())
            .expect_err("duplicate key");
        assert_eq!(error.violations()[0].pointer, "/a/b");
        assert_eq!(error.violations()[0].rule, "duplicate-key");
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        assert!(parse_json(br#"{"a":[{"b":1}]}"#, &limits).is_ok());
        let error = parse_json(br#"{"a":[{"b":[1]}]}"#, &limits).expect_err("too deep");
        assert!(matches!(error, Error::TooDeep { limit: 3, ref pointer } if pointer == "/a/0/b"));
    }

    #[test]
    fn size_bom_and_encoding() {
        let limits = Limits {
            max_bytes: 8,
            ..Limits::default()
        };
        assert!(matches!(
            parse_json(b"[1,2,3,4,5]", &limits),
            Err(Error::TooLarge { limit: 8 })
        ));
        assert!(parse_json(b"\xEF\xBB\xBF{}", &Limits::default()).is_ok());
        let error = parse_json(b"{\"a\":\"\xC3\x28\"}", &Limits::default()).expect_err("bad UTF-8");
        assert!(
            matches!(error, Error::Malformed { line: Some(1), .. }),
            "{error}"
        );
    }
}
