//! The OpenAPI document (`openapi/passerelle.json`) kept in step with the code:
//! it is valid OpenAPI 3.1 whose schemas compile as JSON Schema 2020-12 (the
//! repository's schemas resolved from `schemas/`), it lists exactly the routes
//! the router serves and every problem type the errors produce, and the real
//! gateway's answers, for a scenario touching every route and most statuses,
//! validate against the schema the document declares for their path, method,
//! status and media type.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use common::gateway::{
    Options, TestGateway, bearer, consent, new_id, organisation, referral, sample,
};
use jsonschema::{Draft, Registry, Resource, Retrieve, Uri, Validator};
use passerelle::decision::{Refusal, RefusalReason};
use passerelle::error::{Error, Violation};
use passerelle::server::http::{OPENAPI, ROUTES};
use passerelle::server::problem::{PROBLEM_BASE, Problem, wire_form};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

/// Where the repository stands for the schema resolver: the document is
/// `openapi/passerelle.json` under it, so its relative references
/// (`../schemas/referral/v2.json`) land in `schemas/`, as they do for tools
/// reading the repository.
const REPOSITORY_URI: &str = "file:///passerelle/";
/// The document's URI under [`REPOSITORY_URI`].
const DOCUMENT_URI: &str = "file:///passerelle/openapi/passerelle.json";
/// The base of the small wrapper schemas that point into the document.
const WRAPPER_URI: &str = "file:///passerelle/openapi/wrapper.json";

const OPERATION_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Headers that describe the message, not the API (HTTP/1.1 and HTTP/2).
const TRANSPORT_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "date",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "vary",
];

const REFERRALS: &str = "/v1/referrals";
const REFERRAL: &str = "/v1/referrals/{id}";
const REFERRAL_EVENTS: &str = "/v1/referrals/{id}/events";
const CONSENTS: &str = "/v1/consents";
const CONSENT: &str = "/v1/consents/{id}";
const CONSENT_EVENTS: &str = "/v1/consents/{id}/events";
const INBOX: &str = "/v1/inbox";
const ACKNOWLEDGE: &str = "/v1/inbox/{id}/ack";
/// The scenario gateway's inbox lease.
const LEASE_SECONDS: u64 = 1;
const V2: &str = "application/vnd.passerelle.referral.v2+json";
const KONEXIO: &str = "konexio-saint-denis";
const FRANCE_TRAVAIL: &str = "france-travail-saint-denis";
const OTHER_ASSOCIATION: &str = "autre-association";

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("the OpenAPI document is valid JSON")
}

/// Reads the repository's `schemas/` folder for the schema compiler; anything
/// else (the network included) is refused, so a reference the repository
/// cannot satisfy fails the test.
struct RepositoryFiles;

impl Retrieve for RepositoryFiles {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let uri = uri.as_str();
        let relative = uri
            .strip_prefix(REPOSITORY_URI)
            .filter(|relative| relative.starts_with("schemas/") && !relative.contains(".."))
            .ok_or_else(|| format!("{uri} is not a schema of the repository"))?;
        let text = std::fs::read_to_string(repository().join(relative))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// A JSON pointer token (RFC 6901 escapes).
fn token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer written as a URI fragment (percent-encoding `{`, `}` ...).
fn fragment(pointer: &str) -> String {
    pointer
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The document and every repository schema it references, read once by
/// [`RepositoryFiles`]. They are registered up front because the compiler
/// only crawls references under schema keywords, and the document's lie
/// under `paths` and `components`.
fn registry() -> &'static Registry<'static> {
    static REGISTRY: OnceLock<Registry<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let document = document();
        let base = jsonschema::uri::from_str(DOCUMENT_URI).expect("the document's URI");
        let mut references = Vec::new();
        find_key(&document, "", "$ref", &mut references);
        let files: BTreeSet<String> = references
            .iter()
            .filter_map(|(_, reference)| reference.as_str())
            .filter_map(|reference| reference.split('#').next())
            .filter(|file| !file.is_empty())
            .map(|file| {
                jsonschema::uri::resolve_against(&base.borrow(), file)
                    .unwrap_or_else(|error| panic!("{file}: {error}"))
                    .as_str()
                    .to_owned()
            })
            .collect();
        let mut builder = Registry::new()
            .draft(Draft::Draft202012)
            .retriever(RepositoryFiles)
            .add(DOCUMENT_URI, Resource::from_contents(document))
            .expect("the document's URI");
        for file in files {
            let uri = jsonschema::uri::from_str(&file).expect("a file URI");
            let contents = RepositoryFiles
                .retrieve(&uri)
                .unwrap_or_else(|error| panic!("{file}: {error}"));
            builder = builder
                .add(&file, Resource::from_contents(contents))
                .expect("a file URI");
        }
        builder.prepare().expect("the schemas register")
    })
}

/// Compiles the schema at `pointer` in the document, as draft 2020-12 with
/// format assertions (as the gateway validates).
fn compile(pointer: &str) -> Result<Validator, String> {
    let wrapper = json!({ "$ref": format!("passerelle.json#{}", fragment(pointer)) });
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_base_uri(WRAPPER_URI)
        .with_registry(registry())
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&wrapper)
        .map_err(|error| format!("the schema at {pointer} does not compile: {error}"))
}

fn errors_of(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| format!("{} (at {:?})", error, error.instance_path().as_str()))
        .collect()
}

/// Follows an OpenAPI Reference Object (`{"$ref": "#/components/..."}`) to
/// the object it names, with that object's pointer.
fn follow(document: &Value, pointer: String) -> (String, &Value) {
    let value = document
        .pointer(&pointer)
        .unwrap_or_else(|| panic!("nothing at {pointer}"));
    match value.get("$ref").and_then(Value::as_str) {
        Some(target) => {
            let target = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{pointer}: only local references are followed"));
            follow(document, target.to_owned())
        }
        None => (pointer, value),
    }
}

/// Every `(pointer, value)` under `value` whose key is `key`, not descending
/// into the matches.
fn find_key(value: &Value, pointer: &str, key: &str, found: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(members) => {
            for (name, member) in members {
                let here = format!("{pointer}/{}", token(name));
                if name == key {
                    found.push((here, member.clone()));
                } else {
                    find_key(member, &here, key, found);
                }
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                find_key(item, &format!("{pointer}/{index}"), key, found);
            }
        }
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_1_and_every_schema_compiles() {
    let document = document();
    let version = document["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1."), "openapi is {version}");
    assert_eq!(
        document["info"]["version"],
        json!(env!("CARGO_PKG_VERSION"))
    );
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    assert!(schemas.contains_key("Problem"));
    let mut failures = Vec::new();
    // The component schemas, and every schema the paths and the shared
    // parameters, headers and responses declare (request bodies included).
    let mut pointers: Vec<String> = schemas
        .keys()
        .map(|name| format!("/components/schemas/{}", token(name)))
        .collect();
    let mut found = Vec::new();
    find_key(&document["paths"], "/paths", "schema", &mut found);
    for part in ["parameters", "headers", "responses"] {
        find_key(
            &document["components"][part],
            &format!("/components/{part}"),
            "schema",
            &mut found,
        );
    }
    pointers.extend(found.into_iter().map(|(pointer, _)| pointer));
    assert!(pointers.len() > 40, "{pointers:?}");
    for pointer in &pointers {
        if let Err(failure) = compile(pointer) {
            failures.push(failure);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_reference_and_example_in_the_document_holds() {
    let document = document();
    let mut failures = Vec::new();
    // Reference Objects and local schema references name something that exists;
    // file references name a file of the repository.
    let mut references = Vec::new();
    find_key(&document, "", "$ref", &mut references);
    for (pointer, reference) in &references {
        let reference = reference.as_str().expect("a $ref is a string");
        let (file, inner) = reference.split_once('#').unwrap_or((reference, ""));
        if file.is_empty() {
            if document.pointer(inner).is_none() {
                failures.push(format!("{pointer}: {reference} names nothing"));
            }
        } else if !repository().join("openapi").join(file).is_file() {
            failures.push(format!(
                "{pointer}: {reference} is not a file of the repository"
            ));
        }
    }
    // Inline examples validate against their schema; external ones exist and,
    // when JSON, validate too.
    let mut media_types = Vec::new();
    find_key(&document["paths"], "/paths", "content", &mut media_types);
    find_key(
        &document["components"],
        "/components",
        "content",
        &mut media_types,
    );
    let mut checked = 0;
    for (content_pointer, content) in &media_types {
        for (media, object) in content.as_object().expect("content is a map") {
            let pointer = format!("{content_pointer}/{}", token(media));
            let mut examples = Vec::new();
            if let Some(example) = object.get("example") {
                examples.push((format!("{pointer}/example"), example.clone()));
            }
            for (name, example) in object
                .get("examples")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let at = format!("{pointer}/examples/{name}");
                if let Some(value) = example.get("value") {
                    examples.push((at, value.clone()));
                } else if let Some(file) = example.get("externalValue").and_then(Value::as_str) {
                    let path = repository().join("openapi").join(file);
                    let text = std::fs::read_to_string(&path)
                        .unwrap_or_else(|_| panic!("{at}: {file} does not exist"));
                    if file.ends_with(".json") {
                        examples.push((at, serde_json::from_str(&text).expect("JSON sample")));
                    } else {
                        examples.push((at, Value::String(text)));
                    }
                }
            }
            if examples.is_empty() {
                continue;
            }
            let validator = compile(&format!("{pointer}/schema")).expect("compiles");
            for (at, example) in examples {
                checked += 1;
                let errors = errors_of(&validator, &example);
                if !errors.is_empty() {
                    failures.push(format!("{at}: {errors:?}"));
                }
            }
        }
    }
    // The `examples` of component schemas, and parameter examples.
    for (name, schema) in document["components"]["schemas"]
        .as_object()
        .expect("schemas")
    {
        let Some(examples) = schema.get("examples").and_then(Value::as_array) else {
            continue;
        };
        let validator = compile(&format!("/components/schemas/{name}")).expect("compiles");
        for example in examples {
            checked += 1;
            let errors = errors_of(&validator, example);
            if !errors.is_empty() {
                failures.push(format!("components.schemas.{name} example: {errors:?}"));
            }
        }
    }
    for (name, parameter) in document["components"]["parameters"]
        .as_object()
        .expect("parameters")
    {
        if let Some(example) = parameter.get("example") {
            checked += 1;
            let validator =
                compile(&format!("/components/parameters/{name}/schema")).expect("compiles");
            let errors = errors_of(&validator, example);
            if !errors.is_empty() {
                failures.push(format!("components.parameters.{name} example: {errors:?}"));
            }
        }
    }
    assert!(checked >= 10, "only {checked} examples checked");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    let document = document();
    let mut documented = BTreeSet::new();
    let mut operation_ids = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in OPERATION_METHODS {
            if let Some(operation) = item.get(*method) {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
                let id = operation["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(
                    operation_ids.insert(id.to_owned()),
                    "operationId {id} twice"
                );
                assert!(
                    operation["responses"]
                        .as_object()
                        .is_some_and(|responses| !responses.is_empty()),
                    "{method} {path} documents no response"
                );
            }
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "served but not documented: {missing:?}; documented but not served: {extra:?}"
    );
}

/// One error of each variant. `variant` has no `_` arm: a new variant does
/// not compile until it is numbered there, and then this test fails until
/// [`ERROR_VARIANTS`] and the list below include it.
fn one_error_of_each_variant() -> Vec<Error> {
    vec![
        Error::Invalid(vec![Violation::new(
            "/person/birth_date",
            "format",
            "a date",
        )]),
        Error::Malformed {
            detail: "unexpected end of input".to_owned(),
            line: Some(1),
            column: Some(17),
        },
        Error::TooLarge { limit: 1024 },
        Error::TooDeep {
            limit: 32,
            pointer: "/a/b".to_owned(),
        },
        Error::UnsupportedFormat("text/plain".to_owned()),
        Error::config("passerelle.toml", "server.listen", "not an address"),
        Error::Io {
            context: "reading the store".to_owned(),
            source: std::io::Error::other("disk"),
        },
        Error::NotFound("referral".to_owned()),
        Error::Conflict("consent record".to_owned()),
        Error::Unauthenticated("no credentials".to_owned()),
        Error::Forbidden("another sender".to_owned()),
        Error::RateLimited {
            retry_after_seconds: 2,
        },
        Error::Refused(Refusal::new(RefusalReason::ConsentWithdrawn, "withdrawn")),
        Error::IdempotencyKeyReused("referral".to_owned()),
        Error::TimedOut("30 s".to_owned()),
        Error::Unavailable("shutting down".to_owned()),
        Error::Internal("bug".to_owned()),
    ]
}

const ERROR_VARIANTS: usize = 17;

fn variant(error: &Error) -> usize {
    match error {
        Error::Invalid(_) => 0,
        Error::Malformed { .. } => 1,
        Error::TooLarge { .. } => 2,
        Error::TooDeep { .. } => 3,
        Error::UnsupportedFormat(_) => 4,
        Error::Config { .. } => 5,
        Error::Io { .. } => 6,
        Error::NotFound(_) => 7,
        Error::Conflict(_) => 8,
        Error::Unauthenticated(_) => 9,
        Error::Forbidden(_) => 10,
        Error::RateLimited { .. } => 11,
        Error::Refused(_) => 12,
        Error::IdempotencyKeyReused(_) => 13,
        Error::Unavailable(_) => 14,
        Error::Internal(_) => 15,
        Error::TimedOut(_) => 16,
    }
}

/// Every refusal reason; numbered without a `_` arm for the same reason.
fn every_refusal_reason() -> Vec<RefusalReason> {
    use RefusalReason as Reason;
    let reasons = vec![
        Reason::ConsentMissing,
        Reason::ConsentRefused,
        Reason::ConsentWithdrawn,
        Reason::ObjectionRecorded,
        Reason::ConsentExpired,
        Reason::ConsentNotYetValid,
        Reason::ConsentInvalidated,
        Reason::OutOfScopeRecipient,
        Reason::OutOfScopePurpose,
        Reason::OutOfScopeCategory,
        Reason::SpecialCategoryWithoutBasis,
        Reason::RequiredFieldRemoved,
        Reason::PolicyNotApplicable,
        Reason::SenderMismatch,
        Reason::RecipientMismatch,
    ];
    let numbered: BTreeSet<usize> = reasons
        .iter()
        .map(|reason| match reason {
            Reason::ConsentMissing => 0,
            Reason::ConsentRefused => 1,
            Reason::ConsentWithdrawn => 2,
            Reason::ObjectionRecorded => 3,
            Reason::ConsentExpired => 4,
            Reason::ConsentNotYetValid => 5,
            Reason::ConsentInvalidated => 6,
            Reason::OutOfScopeRecipient => 7,
            Reason::OutOfScopePurpose => 8,
            Reason::OutOfScopeCategory => 9,
            Reason::SpecialCategoryWithoutBasis => 10,
            Reason::RequiredFieldRemoved => 11,
            Reason::PolicyNotApplicable => 12,
            Reason::SenderMismatch => 13,
            Reason::RecipientMismatch => 14,
        })
        .collect();
    assert_eq!(
        numbered,
        (0..15).collect(),
        "list every refusal reason once"
    );
    reasons
}

fn string_enum(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .expect("an enum")
        .iter()
        .map(|item| item.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn every_problem_type_and_reason_the_code_produces_is_documented_at_its_status() {
    let document = document();
    let errors = one_error_of_each_variant();
    let numbered: BTreeSet<usize> = errors.iter().map(variant).collect();
    assert_eq!(
        numbered,
        (0..ERROR_VARIANTS).collect(),
        "build one error of each variant"
    );
    let problem = &document["components"]["schemas"]["Problem"];
    let documented_types = string_enum(&problem["properties"]["type"]["enum"]);
    // The (status, type) pairs the shared error responses declare.
    let mut answered = BTreeSet::new();
    for (name, response) in document["components"]["responses"]
        .as_object()
        .expect("responses")
    {
        let Some(schema) = response.pointer("/content/application~1problem+json/schema") else {
            continue;
        };
        let status = schema["properties"]["status"]["const"]
            .as_u64()
            .unwrap_or_else(|| panic!("response {name}: its problem has no status const"));
        for problem_type in string_enum(&schema["properties"]["type"]["enum"]) {
            answered.insert((status, problem_type));
        }
    }
    let validator = compile("/components/schemas/Problem").expect("compiles");
    let mut produced = BTreeSet::new();
    for error in &errors {
        let form = wire_form(error);
        let problem_type = format!("{PROBLEM_BASE}{}", form.slug);
        assert!(
            documented_types.contains(&problem_type),
            "{problem_type} is not in the Problem schema's enum"
        );
        let status = u64::from(form.status.as_u16());
        assert!(
            answered.contains(&(status, problem_type.clone())),
            "no documented response answers {problem_type} with {status}"
        );
        let body = serde_json::to_value(Problem::of(error)).expect("JSON");
        let failures = errors_of(&validator, &body);
        assert!(failures.is_empty(), "{body}: {failures:?}");
        produced.insert(problem_type);
    }
    assert_eq!(
        produced, documented_types,
        "the Problem enum lists a type no error produces"
    );
    let reasons: BTreeSet<String> = every_refusal_reason()
        .into_iter()
        .map(|reason| reason.code().to_owned())
        .collect();
    let documented_reasons =
        string_enum(&document["components"]["schemas"]["RefusalReason"]["enum"]);
    assert_eq!(reasons, documented_reasons);
}

/// `InvalidArgument` → `INVALID_ARGUMENT`, as gRPC documentation writes codes.
fn grpc_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (index, character) in format!("{code:?}").chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            name.push('_');
        }
        name.push(character.to_ascii_uppercase());
    }
    name
}

#[test]
fn the_guide_gives_each_problem_type_its_status_and_grpc_code() {
    let guide = std::fs::read_to_string(repository().join("docs/api.md")).expect("docs/api.md");
    let section = guide
        .split("\n## ")
        .find(|section| section.starts_with("Problems"))
        .expect("a Problems section");
    // | `slug` | HTTP | `GRPC_CODE` | when |
    let rows: BTreeMap<String, (u16, String)> = section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let unquote = |cell: &str| cell.trim_matches('`').to_owned();
            let status = cells[2].parse().expect("an HTTP status");
            (unquote(cells[1]), (status, unquote(cells[3])))
        })
        .collect();
    let mut listed = BTreeSet::new();
    for error in one_error_of_each_variant() {
        let form = wire_form(&error);
        let row = rows
            .get(form.slug)
            .unwrap_or_else(|| panic!("docs/api.md does not list {}", form.slug));
        assert_eq!(
            row,
            &(form.status.as_u16(), grpc_name(form.grpc)),
            "docs/api.md, {}",
            form.slug
        );
        listed.insert(form.slug.to_owned());
    }
    let documented: BTreeSet<String> = rows.keys().cloned().collect();
    assert_eq!(
        documented, listed,
        "docs/api.md lists a type no error produces"
    );
}

/// The document as a contract for real answers: each answer's status must be
/// documented for its operation, its body must validate against the schema
/// declared for its media type, and its headers must be declared.
struct Contract {
    document: Value,
    validators: Mutex<HashMap<String, Validator>>,
    exercised: Mutex<BTreeSet<(String, String, u16)>>,
}

/// What the gateway answered.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Contract {
    fn new() -> Self {
        Self {
            document: document(),
            validators: Mutex::new(HashMap::new()),
            exercised: Mutex::new(BTreeSet::new()),
        }
    }

    fn validate(&self, pointer: &str, instance: &Value) -> Vec<String> {
        let mut validators = self.validators.lock().expect("validators");
        let validator = validators
            .entry(pointer.to_owned())
            .or_insert_with(|| compile(pointer).unwrap_or_else(|failure| panic!("{failure}")));
        errors_of(validator, instance)
    }

    /// Sends `request` for the operation `method template` and checks the answer.
    async fn exchange(&self, method: &str, template: &str, request: RequestBuilder) -> Answer {
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("the body");
        let operation_pointer =
            format!("/paths/{}/{}", token(template), method.to_ascii_lowercase());
        assert!(
            self.document.pointer(&operation_pointer).is_some(),
            "{method} {template} is not documented"
        );
        let status_pointer = format!("{operation_pointer}/responses/{}", status.as_u16());
        assert!(
            self.document.pointer(&status_pointer).is_some(),
            "{method} {template} answered {status}, which the document does not list: {}",
            String::from_utf8_lossy(&bytes)
        );
        let (response_pointer, documented) = follow(&self.document, status_pointer);
        let context = format!("{method} {template} {status}");
        // Headers: the required ones are sent; the ones sent are declared and valid.
        let declared: BTreeMap<String, String> = documented
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, _)| {
                (
                    name.to_ascii_lowercase(),
                    format!("{response_pointer}/headers/{}", token(name)),
                )
            })
            .collect();
        for (name, pointer) in &declared {
            let (header_pointer, header) = follow(&self.document, pointer.clone());
            let value = headers.get(name.as_str());
            if header["required"] == json!(true) {
                assert!(value.is_some(), "{context}: no {name} header");
            }
            if let Some(value) = value {
                let value = Value::String(value.to_str().expect("ASCII header").to_owned());
                let errors = self.validate(&format!("{header_pointer}/schema"), &value);
                assert!(
                    errors.is_empty(),
                    "{context}: header {name} {value}: {errors:?}"
                );
            }
        }
        // Any other header than the transport's own is part of the API: it must be documented.
        for name in headers.keys() {
            assert!(
                TRANSPORT_HEADERS.contains(&name.as_str()) || declared.contains_key(name.as_str()),
                "{context}: the {name} header is sent but not documented"
            );
        }
        // The body, against the schema of its media type.
        let body = match documented.get("content").and_then(Value::as_object) {
            None => {
                assert!(
                    bytes.is_empty(),
                    "{context}: a body the document does not declare"
                );
                Value::Null
            }
            Some(content) => {
                let media = headers
                    .get("content-type")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.split(';').next())
                    .map(|value| value.trim().to_ascii_lowercase())
                    .unwrap_or_else(|| panic!("{context}: no Content-Type"));
                assert!(
                    content.contains_key(&media),
                    "{context}: {media} is not a documented media type"
                );
                let body = if media == "application/json" || media.ends_with("+json") {
                    serde_json::from_slice(&bytes)
                        .unwrap_or_else(|_| panic!("{context}: the body is not JSON"))
                } else {
                    Value::String(String::from_utf8(bytes.to_vec()).expect("UTF-8 text"))
                };
                let schema = format!("{response_pointer}/content/{}/schema", token(&media));
                let errors = self.validate(&schema, &body);
                assert!(errors.is_empty(), "{context}: {body}\n{errors:#?}");
                body
            }
        };
        self.exercised.lock().expect("exercised").insert((
            method.to_owned(),
            template.to_owned(),
            status.as_u16(),
        ));
        Answer {
            status,
            headers,
            body,
        }
    }
}

fn problem_type(answer: &Answer) -> &str {
    answer.body["type"]
        .as_str()
        .and_then(|uri| uri.strip_prefix(PROBLEM_BASE))
        .unwrap_or_else(|| panic!("not a problem: {}", answer.body))
}

/// The `(pointer, rule)` of each violation of a validation problem.
fn violations(answer: &Answer) -> Vec<(String, String)> {
    answer.body["violations"]
        .as_array()
        .unwrap_or_else(|| panic!("no violations: {}", answer.body))
        .iter()
        .map(|violation| {
            let text = |key: &str| violation[key].as_str().expect("a string").to_owned();
            (text("pointer"), text("rule"))
        })
        .collect()
}

/// The inbox items of a pulled page about `referral_id` of `kind`.
fn items_about<'a>(page: &'a Answer, kind: &str, referral_id: &str) -> Vec<&'a Value> {
    page.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not an inbox page: {}", page.body))
        .iter()
        .filter(|item| item["kind"] == json!(kind) && item["referral_id"] == json!(referral_id))
        .collect()
}

/// The one inbox item of a pulled page about `referral_id` of `kind`.
fn item_about<'a>(page: &'a Answer, kind: &str, referral_id: &str) -> &'a Value {
    match items_about(page, kind, referral_id).as_slice() {
        [item] => item,
        other => panic!(
            "{} {kind} item(s) about {referral_id}: {}",
            other.len(),
            page.body
        ),
    }
}

#[tokio::test]
async fn the_gateway_answers_as_the_document_says() {
    let contract = Contract::new();
    let gateway = TestGateway::start_with(Options {
        max_body_bytes: 256 * 1024,
        // A short lease, so that the pull scenario can wait one out.
        extra_toml: format!("\n[delivery]\nlease_seconds = {LEASE_SECONDS}\n"),
        ..Options::default()
    });
    let http = gateway.client();
    let url = |path: &str| gateway.url(path);

    // Operations: no authentication; the served document is the file.
    for (template, expected) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let answer = contract
            .exchange("GET", template, http.get(url(template)))
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body["status"], json!(expected));
    }
    let served = contract
        .exchange("GET", "/v1/openapi.json", http.get(url("/v1/openapi.json")))
        .await;
    assert_eq!(served.body, contract.document);

    // Consent records: 201, 200 replayed, 409 other content, 403, 415, 422.
    let record_id = new_id();
    let store = |caller: &str, body: &Value| {
        http.post(url(CONSENTS))
            .header("authorization", bearer(caller))
            .json(body)
    };
    let stored = contract
        .exchange("POST", CONSENTS, store(KONEXIO, &consent(&record_id)))
        .await;
    assert_eq!(stored.status, StatusCode::CREATED);
    assert_eq!(stored.body["state"], json!("active"));
    let replayed = contract
        .exchange("POST", CONSENTS, store(KONEXIO, &consent(&record_id)))
        .await;
    assert_eq!(replayed.status, StatusCode::OK);
    assert_eq!(replayed.body["replayed"], json!(true));
    let mut other = consent(&record_id);
    other["subject_id"] = json!("subj-another-person");
    let conflict = contract
        .exchange("POST", CONSENTS, store(KONEXIO, &other))
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    let stranger = contract
        .exchange(
            "POST",
            CONSENTS,
            store(OTHER_ASSOCIATION, &consent(&new_id())),
        )
        .await;
    assert_eq!(stranger.status, StatusCode::FORBIDDEN);
    let plain = contract
        .exchange(
            "POST",
            CONSENTS,
            http.post(url(CONSENTS))
                .header("authorization", bearer(KONEXIO))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_eq!(plain.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut incomplete = consent(&new_id());
    incomplete["purposes"] = json!([]);
    incomplete["nickname"] = json!("not a field");
    let invalid = contract
        .exchange("POST", CONSENTS, store(KONEXIO, &incomplete))
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_type(&invalid), "validation");

    // Referrals: 202 (with Location), 202 replayed, and each refusal.
    let referral_id = new_id();
    let send = |caller: &str, content_type: &str, body: Vec<u8>| {
        http.post(url(REFERRALS))
            .header("authorization", bearer(caller))
            .header("content-type", content_type)
            .body(body)
    };
    let body = |value: &Value| serde_json::to_vec(value).expect("JSON");
    let document = referral(&referral_id, &record_id);
    let accepted = contract
        .exchange("POST", REFERRALS, send(KONEXIO, V2, body(&document)))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    assert_eq!(
        accepted
            .headers
            .get("location")
            .map(|value| value.to_str().expect("ASCII")),
        Some(format!("/v1/referrals/{referral_id}").as_str())
    );
    assert!(!accepted.headers.contains_key("idempotent-replayed"));
    let again = contract
        .exchange("POST", REFERRALS, send(KONEXIO, V2, body(&document)))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert!(again.headers.contains_key("idempotent-replayed"));
    assert_eq!(again.body, accepted.body);
    let mut changed = document.clone();
    changed["person"]["first_name"] = json!("Autre");
    let reused = contract
        .exchange("POST", REFERRALS, send(KONEXIO, V2, body(&changed)))
        .await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_type(&reused), "idempotency-key-reused");
    let unconsented = contract
        .exchange(
            "POST",
            REFERRALS,
            send(KONEXIO, V2, body(&referral(&new_id(), &new_id()))),
        )
        .await;
    assert_eq!(problem_type(&unconsented), "refused");
    assert_eq!(unconsented.body["reason"], json!("consent-missing"));
    let mut broken = referral(&new_id(), &record_id);
    broken["nickname"] = json!("Zouzou");
    let validation = contract
        .exchange("POST", REFERRALS, send(KONEXIO, V2, body(&broken)))
        .await;
    assert_eq!(problem_type(&validation), "validation");
    let malformed = contract
        .exchange(
            "POST",
            REFERRALS,
            send(KONEXIO, V2, b"{\"referral_id\": ".to_vec()),
        )
        .await;
    assert_eq!(problem_type(&malformed), "malformed");
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes();
    let too_deep = contract
        .exchange("POST", REFERRALS, send(KONEXIO, V2, deep))
        .await;
    assert_eq!(problem_type(&too_deep), "too-deep");
    let too_large = contract
        .exchange("POST", REFERRALS, send(KONEXIO, V2, vec![b' '; 257 * 1024]))
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    let undeclared = contract
        .exchange(
            "POST",
            REFERRALS,
            send(KONEXIO, "application/json", body(&document)),
        )
        .await;
    assert_eq!(undeclared.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An unreadable query string is a problem like the others.
    let unreadable_query = contract
        .exchange(
            "POST",
            REFERRALS,
            http.post(url("/v1/referrals?nickname=1"))
                .header("authorization", bearer(KONEXIO))
                .header("content-type", V2)
                .body(body(&document)),
        )
        .await;
    assert_eq!(unreadable_query.status, StatusCode::BAD_REQUEST);
    let forged = contract
        .exchange(
            "POST",
            REFERRALS,
            send(
                OTHER_ASSOCIATION,
                V2,
                body(&referral(&new_id(), &record_id)),
            ),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let anonymous = contract
        .exchange(
            "POST",
            REFERRALS,
            http.post(url(REFERRALS))
                .header("content-type", V2)
                .body(body(&document)),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let wrong_key = contract
        .exchange(
            "GET",
            REFERRAL,
            http.get(url(&format!("{REFERRALS}/{referral_id}")))
                .header("authorization", "Bearer not-a-key"),
        )
        .await;
    assert_eq!(wrong_key.status, StatusCode::UNAUTHORIZED);

    // Other input formats: a DORA orientation, a CSV batch answered per row.
    let france_travail_siret = organisation(FRANCE_TRAVAIL).siret;
    let dora = contract
        .exchange(
            "POST",
            REFERRALS,
            http.post(url(&format!(
                "{REFERRALS}?format=dora&recipient={france_travail_siret}"
            )))
            .header("authorization", bearer(KONEXIO))
            .header("content-type", "application/json")
            .body(body(&sample("dora-orientation.json"))),
        )
        .await;
    assert_eq!(dora.status, StatusCode::ACCEPTED, "{}", dora.body);
    assert_eq!(dora.body["decision"]["legal_basis"], json!("public_task"));
    let csv =
        std::fs::read(repository().join("samples/association-export-cdb.csv")).expect("sample CSV");
    let batch = contract
        .exchange(
            "POST",
            REFERRALS,
            http.post(url(&format!(
                "{REFERRALS}?format=csv&mapping=carnet-de-bord&recipient={france_travail_siret}"
            )))
            .header("authorization", bearer(KONEXIO))
            .header("content-type", "text/csv")
            .body(csv),
        )
        .await;
    assert_eq!(batch.status, StatusCode::OK);
    let rows = batch.body["rows"].as_array().expect("rows");
    assert!(rows.len() >= 2, "{}", batch.body);

    // Status events: 201, 200 replayed, 403, 404, 415, 422.
    let referral_url = url(&format!("{REFERRALS}/{referral_id}"));
    let events_url = url(&format!("{REFERRALS}/{referral_id}/events"));
    let event = json!({
        "event_id": new_id(),
        "schema_version": "passerelle.status.v1",
        "referral_id": referral_id,
        "status": "STATUS_ACCEPTED",
        "occurred_at": "2026-12-02T10:00:00Z",
        "author_siret": france_travail_siret,
    });
    let post_event = |caller: &str, event: &Value| {
        http.post(&events_url)
            .header("authorization", bearer(caller))
            .json(event)
    };
    let recorded = contract
        .exchange("POST", REFERRAL_EVENTS, post_event(FRANCE_TRAVAIL, &event))
        .await;
    assert_eq!(recorded.status, StatusCode::CREATED);
    let replayed_event = contract
        .exchange("POST", REFERRAL_EVENTS, post_event(FRANCE_TRAVAIL, &event))
        .await;
    assert_eq!(replayed_event.status, StatusCode::OK);
    assert_eq!(replayed_event.body["replayed"], json!(true));
    let mut rewritten = event.clone();
    rewritten["status"] = json!("STATUS_IN_PROGRESS");
    let reused_event = contract
        .exchange(
            "POST",
            REFERRAL_EVENTS,
            post_event(FRANCE_TRAVAIL, &rewritten),
        )
        .await;
    assert_eq!(problem_type(&reused_event), "idempotency-key-reused");
    let mut by_sender = event.clone();
    by_sender["event_id"] = json!(new_id());
    by_sender["author_siret"] = json!(organisation(KONEXIO).siret);
    let sender_status = contract
        .exchange("POST", REFERRAL_EVENTS, post_event(KONEXIO, &by_sender))
        .await;
    assert_eq!(sender_status.status, StatusCode::FORBIDDEN);
    let other_tenant = contract
        .exchange(
            "POST",
            REFERRAL_EVENTS,
            post_event(OTHER_ASSOCIATION, &event),
        )
        .await;
    assert_eq!(other_tenant.status, StatusCode::NOT_FOUND);
    let text_event = contract
        .exchange(
            "POST",
            REFERRAL_EVENTS,
            http.post(&events_url)
                .header("authorization", bearer(FRANCE_TRAVAIL))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_eq!(text_event.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let unknown_format = contract
        .exchange(
            "POST",
            REFERRAL_EVENTS,
            http.post(url(&format!(
                "{REFERRALS}/{referral_id}/events?format=dora"
            )))
            .header("authorization", bearer(FRANCE_TRAVAIL))
            .json(&event),
        )
        .await;
    assert_eq!(unknown_format.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut wrong_referral = event.clone();
    wrong_referral["event_id"] = json!(new_id());
    wrong_referral["referral_id"] = json!(new_id());
    let invalid_event = contract
        .exchange(
            "POST",
            REFERRAL_EVENTS,
            post_event(FRANCE_TRAVAIL, &wrong_referral),
        )
        .await;
    assert_eq!(problem_type(&invalid_event), "validation");
    // The referral is accepted: being received is no longer a step it may take.
    let mut late = event.clone();
    late["event_id"] = json!(new_id());
    late["status"] = json!("STATUS_RECEIVED");
    let illegal = contract
        .exchange("POST", REFERRAL_EVENTS, post_event(FRANCE_TRAVAIL, &late))
        .await;
    assert_eq!(problem_type(&illegal), "validation");
    assert_eq!(
        violations(&illegal),
        [("/status".to_owned(), "illegal-transition".to_owned())]
    );

    // Pull delivery (the test organisations are in pull mode): France
    // Travail's inbox holds the accepted referral, minimised by its policy;
    // Konexio's holds the status event France Travail posted about it.
    let pull = |caller: &str, query: &str| {
        http.get(url(&format!("{INBOX}{query}")))
            .header("authorization", bearer(caller))
    };
    let acknowledge = |caller: &str, delivery_id: &str| {
        http.post(url(&format!("{INBOX}/{delivery_id}/ack")))
            .header("authorization", bearer(caller))
    };
    let pulled = contract
        .exchange("GET", INBOX, pull(FRANCE_TRAVAIL, "?limit=100"))
        .await;
    assert_eq!(pulled.status, StatusCode::OK);
    let offered = item_about(&pulled, "referral", &referral_id);
    assert_eq!(offered["attempt"], json!(1));
    assert_eq!(offered["format"], json!("passerelle-v2"));
    assert_eq!(offered["message"]["referral_id"], json!(referral_id));
    let removed = accepted.body["decision"]["removed"]
        .as_array()
        .expect("removed field paths");
    assert!(!removed.is_empty(), "{}", accepted.body);
    for path in removed {
        let pointer = format!("/{}", path.as_str().expect("a path").replace('.', "/"));
        assert!(
            offered["message"].pointer(&pointer).is_none(),
            "{pointer} reached France Travail's inbox"
        );
    }
    assert!(pulled.body["cursor"].as_i64() >= offered["cursor"].as_i64());
    let delivery_id = offered["delivery_id"].as_str().expect("a delivery id");
    let news = contract.exchange("GET", INBOX, pull(KONEXIO, "")).await;
    let status_item = item_about(&news, "status_event", &referral_id);
    assert_eq!(status_item["message"]["event_id"], event["event_id"]);
    assert_eq!(status_item["message"]["status"], json!("STATUS_ACCEPTED"));
    let status_delivery = status_item["delivery_id"].as_str().expect("a delivery id");
    let news_cursor = news.body["cursor"].as_i64().expect("a cursor");

    // Acknowledged, twice; the id is nobody else's to acknowledge.
    for _ in 0..2 {
        let acknowledged = contract
            .exchange(
                "POST",
                ACKNOWLEDGE,
                acknowledge(FRANCE_TRAVAIL, delivery_id),
            )
            .await;
        assert_eq!(acknowledged.status, StatusCode::NO_CONTENT);
    }
    for (caller, id) in [
        (KONEXIO, delivery_id.to_owned()),
        (FRANCE_TRAVAIL, new_id()),
        (FRANCE_TRAVAIL, "not-a-delivery".to_owned()),
    ] {
        let refused = contract
            .exchange("POST", ACKNOWLEDGE, acknowledge(caller, &id))
            .await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND, "{caller} {id}");
    }

    // Inbox queries the gateway refuses.
    for query in ["?limit=0", "?limit=101"] {
        let out_of_range = contract
            .exchange("GET", INBOX, pull(FRANCE_TRAVAIL, query))
            .await;
        assert_eq!(problem_type(&out_of_range), "validation", "{query}");
        assert_eq!(
            violations(&out_of_range),
            [(String::new(), "limit".to_owned())]
        );
    }
    for query in ["?limit=ten", "?from=3"] {
        let unreadable = contract
            .exchange("GET", INBOX, pull(FRANCE_TRAVAIL, query))
            .await;
        assert_eq!(unreadable.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(problem_type(&unreadable), "malformed");
    }
    let anonymous_pull = contract.exchange("GET", INBOX, http.get(url(INBOX))).await;
    assert_eq!(anonymous_pull.status, StatusCode::UNAUTHORIZED);

    // A referral leased, then its consent withdrawn: once the lease is over it
    // is cancelled rather than offered again, and acknowledging it is a
    // conflict. Konexio's unacknowledged status event, meanwhile, is offered
    // again under the same delivery id, however far its cursor went.
    let second_record = new_id();
    let second_stored = contract
        .exchange("POST", CONSENTS, store(KONEXIO, &consent(&second_record)))
        .await;
    assert_eq!(second_stored.status, StatusCode::CREATED);
    let second_referral = new_id();
    let second_accepted = contract
        .exchange(
            "POST",
            REFERRALS,
            send(
                KONEXIO,
                V2,
                body(&referral(&second_referral, &second_record)),
            ),
        )
        .await;
    assert_eq!(second_accepted.status, StatusCode::ACCEPTED);
    let leased = contract
        .exchange("GET", INBOX, pull(FRANCE_TRAVAIL, "?limit=100"))
        .await;
    let second_delivery = item_about(&leased, "referral", &second_referral)["delivery_id"]
        .as_str()
        .expect("a delivery id")
        .to_owned();
    let second_withdrawn = contract
        .exchange(
            "POST",
            CONSENT_EVENTS,
            http.post(url(&format!("{CONSENTS}/{second_record}/events")))
                .header("authorization", bearer(KONEXIO))
                .json(&json!({
                    "kind": "CONSENT_EVENT_KIND_WITHDRAWN",
                    "at": chrono::Utc::now().to_rfc3339(),
                    "recorded_by": organisation(KONEXIO).siret,
                })),
        )
        .await;
    assert_eq!(second_withdrawn.status, StatusCode::CREATED);
    tokio::time::sleep(std::time::Duration::from_millis(LEASE_SECONDS * 1000 + 300)).await;
    let after_lease = contract
        .exchange(
            "GET",
            INBOX,
            pull(
                FRANCE_TRAVAIL,
                &format!("?after={}&limit=100", leased.body["cursor"]),
            ),
        )
        .await;
    assert!(items_about(&after_lease, "referral", &second_referral).is_empty());
    assert!(items_about(&after_lease, "referral", &referral_id).is_empty());
    let cancelled = contract
        .exchange(
            "POST",
            ACKNOWLEDGE,
            acknowledge(FRANCE_TRAVAIL, &second_delivery),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::CONFLICT);
    assert_eq!(problem_type(&cancelled), "conflict");
    let second_view = contract
        .exchange(
            "GET",
            REFERRAL,
            http.get(url(&format!("{REFERRALS}/{second_referral}")))
                .header("authorization", bearer(KONEXIO)),
        )
        .await;
    assert_eq!(second_view.body["state"], json!("withdrawn"));
    let later = contract
        .exchange(
            "GET",
            INBOX,
            pull(KONEXIO, &format!("?after={news_cursor}")),
        )
        .await;
    let offered_again = item_about(&later, "status_event", &referral_id);
    assert_eq!(offered_again["delivery_id"], json!(status_delivery));
    assert_eq!(offered_again["attempt"], json!(2));
    let status_acknowledged = contract
        .exchange("POST", ACKNOWLEDGE, acknowledge(KONEXIO, status_delivery))
        .await;
    assert_eq!(status_acknowledged.status, StatusCode::NO_CONTENT);

    // Reading a referral: as its sender (by API key, then by client
    // certificate), as its recipient, as a stranger, and an unknown id.
    let as_sender = contract
        .exchange(
            "GET",
            REFERRAL,
            http.get(&referral_url)
                .header("authorization", bearer(KONEXIO)),
        )
        .await;
    assert_eq!(as_sender.body["role"], json!("sender"));
    assert_eq!(as_sender.body["state"], json!("delivered"));
    assert_eq!(as_sender.body["events"].as_array().map(Vec::len), Some(1));
    let by_certificate = contract
        .exchange(
            "GET",
            REFERRAL,
            gateway.client_with_certificate(KONEXIO).get(&referral_url),
        )
        .await;
    assert_eq!(by_certificate.status, StatusCode::OK);
    assert_eq!(by_certificate.body["role"], json!("sender"));
    let as_recipient = contract
        .exchange(
            "GET",
            REFERRAL,
            http.get(&referral_url)
                .header("authorization", bearer(FRANCE_TRAVAIL)),
        )
        .await;
    assert_eq!(as_recipient.body["role"], json!("recipient"));
    let as_stranger = contract
        .exchange(
            "GET",
            REFERRAL,
            http.get(&referral_url)
                .header("authorization", bearer(OTHER_ASSOCIATION)),
        )
        .await;
    assert_eq!(as_stranger.status, StatusCode::NOT_FOUND);
    let unknown = contract
        .exchange(
            "GET",
            REFERRAL,
            http.get(url(&format!("{REFERRALS}/{}", new_id())))
                .header("authorization", bearer(KONEXIO)),
        )
        .await;
    // Another tenant's referral answers exactly as a missing one.
    assert_eq!(
        (unknown.status, problem_type(&unknown)),
        (as_stranger.status, problem_type(&as_stranger))
    );

    // Reading a consent record: a controller, a covered recipient, a stranger.
    let record_url = url(&format!("/v1/consents/{record_id}"));
    for (caller, expected) in [
        (KONEXIO, StatusCode::OK),
        (FRANCE_TRAVAIL, StatusCode::OK),
        (OTHER_ASSOCIATION, StatusCode::NOT_FOUND),
    ] {
        let answer = contract
            .exchange(
                "GET",
                CONSENT,
                http.get(&record_url)
                    .header("authorization", bearer(caller)),
            )
            .await;
        assert_eq!(answer.status, expected, "{caller}");
    }

    // Consent events: 201, 403, 404, 422; then the next referral is refused.
    let consent_events_url = url(&format!("/v1/consents/{record_id}/events"));
    let consent_event = |kind: &str, caller: &str| {
        json!({
            "kind": kind,
            "at": chrono::Utc::now().to_rfc3339(),
            "recorded_by": organisation(caller).siret,
        })
    };
    let append = |caller: &str, event: &Value| {
        http.post(&consent_events_url)
            .header("authorization", bearer(caller))
            .json(event)
    };
    let renewal_by_recipient = contract
        .exchange(
            "POST",
            CONSENT_EVENTS,
            append(
                FRANCE_TRAVAIL,
                &consent_event("CONSENT_EVENT_KIND_RENEWED", FRANCE_TRAVAIL),
            ),
        )
        .await;
    assert_eq!(renewal_by_recipient.status, StatusCode::FORBIDDEN);
    let by_stranger = contract
        .exchange(
            "POST",
            CONSENT_EVENTS,
            append(
                OTHER_ASSOCIATION,
                &consent_event("CONSENT_EVENT_KIND_WITHDRAWN", OTHER_ASSOCIATION),
            ),
        )
        .await;
    assert_eq!(by_stranger.status, StatusCode::NOT_FOUND);
    let not_an_event = contract
        .exchange(
            "POST",
            CONSENT_EVENTS,
            append(
                FRANCE_TRAVAIL,
                &json!({"kind": "CONSENT_EVENT_KIND_WITHDRAWN"}),
            ),
        )
        .await;
    assert_eq!(problem_type(&not_an_event), "validation");
    let withdrawn = contract
        .exchange(
            "POST",
            CONSENT_EVENTS,
            append(
                FRANCE_TRAVAIL,
                &consent_event("CONSENT_EVENT_KIND_WITHDRAWN", FRANCE_TRAVAIL),
            ),
        )
        .await;
    assert_eq!(withdrawn.status, StatusCode::CREATED);
    assert_eq!(withdrawn.body["state"], json!("withdrawn"));
    let after_withdrawal = contract
        .exchange(
            "POST",
            REFERRALS,
            send(KONEXIO, V2, body(&referral(&new_id(), &record_id))),
        )
        .await;
    assert_eq!(after_withdrawal.body["reason"], json!("consent-withdrawn"));

    // 429, with Retry-After, from a gateway allowing a burst of two.
    let limited = TestGateway::start_with(Options {
        rate: (1, 2),
        ..Options::default()
    });
    let limited_http = limited.client();
    let mut statuses = Vec::new();
    // The burst is spent in a few milliseconds; more tries only guard against a slow machine.
    while statuses.len() < 10 && statuses.last() != Some(&429) {
        let answer = contract
            .exchange(
                "GET",
                REFERRAL,
                limited_http
                    .get(limited.url(&format!("{REFERRALS}/{}", new_id())))
                    .header("authorization", bearer(KONEXIO)),
            )
            .await;
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(&statuses[..2], &[404, 404]);

    // The scenario covered every route and the statuses the brief lists.
    let exercised = contract.exercised.lock().expect("exercised").clone();
    let routes: BTreeSet<(String, String)> = exercised
        .iter()
        .map(|(method, template, _)| (method.clone(), template.clone()))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(routes, served);
    let statuses: BTreeSet<u16> = exercised.iter().map(|(_, _, status)| *status).collect();
    for status in [
        200, 201, 202, 204, 400, 401, 403, 404, 409, 413, 415, 422, 429,
    ] {
        assert!(statuses.contains(&status), "no answer {status} was checked");
    }
}
