//! `passerelle conformance run`: a suite's cases against a live gateway.
//!
//! For each case the runner fills its placeholders, sends its `given`
//! requests (each must succeed), sends its `when` request, checks the answer,
//! then waits for what the gateway must have pushed to the organisations —
//! the runner's own receiver ([`Capture`]) plays all of them — and checks
//! that too. Cases are independent (fresh ids), so a few run at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::Value;

use super::capture::{Capture, Received};
use super::mask::{mask_body, mask_headers};
use super::suite::{Body, Case, Delivery, JsonChecks, Placeholders, Request, Suite};
use super::{CaseResult, Exchange, Level, Outcome, RunReport};

/// How many cases run at once.
const PARALLEL_CASES: usize = 4;

/// What `conformance run` was asked.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The target's base URL (`http://127.0.0.1:8080`).
    pub target: String,
    /// The suite's folder (`conformance/v1`).
    pub suite: PathBuf,
    /// Run only the cases of this level (the others are reported skipped).
    pub level: Option<Level>,
    /// Run only these cases (by id); all when empty.
    pub cases: Vec<String>,
    /// Where the runner's receiver listens (default: the suite's `receiver_listen`).
    pub receiver_listen: Option<SocketAddr>,
    /// The Standard Webhooks key the target signs with.
    pub receiver_secret: Vec<u8>,
    /// How long to wait for an expected delivery.
    pub wait: Duration,
    /// How long to wait before concluding that nothing more arrives.
    pub settle: Duration,
    /// A PEM file of the CA that signed the target's certificate.
    pub ca: Option<PathBuf>,
}

/// What the cases share while a run lasts.
struct Runner {
    suite: Suite,
    options: RunOptions,
    client: reqwest::Client,
    capture: Capture,
}

/// Runs the suite against the target and reports every case. An error means
/// the run could not start (suite invalid, receiver address taken ...); a
/// non-conforming target is a report whose [`RunReport::conforms`] is false.
pub async fn run(options: RunOptions) -> Result<RunReport, String> {
    let suite = Suite::load(&options.suite)?;
    let listen = match options.receiver_listen {
        Some(listen) => listen,
        None => suite.manifest.receiver_listen.parse().map_err(|_| {
            format!(
                "suite.json: receiver_listen {:?} is not an address",
                suite.manifest.receiver_listen
            )
        })?,
    };
    let capture = Capture::start(listen, options.receiver_secret.clone()).await?;
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(concat!(
            "passerelle-conformance/",
            env!("CARGO_PKG_VERSION")
        ));
    if let Some(ca) = &options.ca {
        let pem = std::fs::read(ca)
            .map_err(|error| format!("{}: cannot be read: {error}", ca.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .map_err(|error| format!("{}: not a PEM certificate: {error}", ca.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    let client = builder
        .build()
        .map_err(|error| format!("no HTTP client: {error}"))?;
    let started_at = Utc::now();
    let clock = Instant::now();
    let runner = Runner {
        suite,
        options,
        client,
        capture,
    };
    let cases: Vec<CaseResult> = futures_util::stream::iter(runner.suite.cases.iter())
        .map(|case| runner.case(case))
        .buffered(PARALLEL_CASES)
        .collect()
        .await;
    let manifest = &runner.suite.manifest;
    Ok(RunReport {
        mode: "gateway".to_owned(),
        suite: format!("{} {} {}", manifest.name, manifest.suite, manifest.version),
        target: runner.options.target.clone(),
        started_at: started_at.to_rfc3339(),
        duration_ms: clock.elapsed().as_millis() as u64,
        requirements: runner.suite.requirements.clone(),
        cases,
    })
}

/// A request ready to send: placeholders filled, body built.
struct Prepared {
    label: String,
    organisation: Option<String>,
    api_key: Option<String>,
    method: reqwest::Method,
    path: String,
    headers: BTreeMap<String, String>,
    body: Option<Vec<u8>>,
    /// The body as JSON, when it is JSON (for `pseudonymised` checks).
    json: Option<Value>,
}

/// An answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Runner {
    async fn case(&self, case: &Case) -> CaseResult {
        let clock = Instant::now();
        let mut exchanges = Vec::new();
        let outcome = match self.selected(case) {
            Err(reason) => Outcome::Skipped { reason },
            Ok(()) => match self.play(case, &mut exchanges).await {
                Ok(failures) if failures.is_empty() => Outcome::Passed,
                Ok(failures) => Outcome::Failed { failures },
                Err(message) => Outcome::Error { message },
            },
        };
        CaseResult {
            id: case.id.clone(),
            title: case.title.clone(),
            level: case.level,
            topic: case.topic.clone(),
            requirements: case.requirements.clone(),
            outcome,
            duration_ms: clock.elapsed().as_millis() as u64,
            exchanges,
        }
    }

    fn selected(&self, case: &Case) -> Result<(), String> {
        if let Some(reason) = &case.skip {
            return Err(reason.clone());
        }
        if !self.options.cases.is_empty() && !self.options.cases.contains(&case.id) {
            return Err("not selected (--case)".to_owned());
        }
        match self.options.level {
            Some(level) if level != case.level => Err(format!(
                "level {} not selected (--level {})",
                case.level.as_str(),
                level.as_str()
            )),
            _ => Ok(()),
        }
    }

    /// Runs a case: the failures of its expectations, or an error when it
    /// could not be run to its end.
    async fn play(
        &self,
        case: &Case,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<Vec<String>, String> {
        let mut placeholders = Placeholders::new(Utc::now());
        let mut given = Vec::new();
        for (index, request) in case.given.iter().enumerate() {
            given.push(self.prepare(request, format!("given[{index}]"), &mut placeholders)?);
        }
        let when = self.prepare(&case.when, "when".to_owned(), &mut placeholders)?;
        let delivered = case
            .then
            .delivered
            .iter()
            .map(|delivery| {
                Ok(Delivery {
                    to: delivery.to.clone(),
                    kind: delivery.kind.clone(),
                    referral: placeholders.fill(&delivery.referral)?,
                    count: delivery.count,
                    checks: fill_checks(&delivery.checks, &mut placeholders)?,
                    pseudonymised: delivery.pseudonymised.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let expected_body = case
            .then
            .body
            .as_ref()
            .map(|checks| fill_checks(checks, &mut placeholders))
            .transpose()?;
        let expected_headers = case
            .then
            .headers
            .iter()
            .map(|(name, value)| Ok((name.to_ascii_lowercase(), placeholders.fill(value)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let referrals: Vec<String> = delivered
            .iter()
            .map(|delivery| delivery.referral.clone())
            .collect();
        if let Some(behaviour) = &case.receiver {
            for referral in &referrals {
                self.capture
                    .fail_first(referral, behaviour.fail_first, behaviour.status);
            }
        }

        for request in &given {
            let answer = self.send(request, exchanges).await?;
            if !(200..300).contains(&answer.status) {
                return Err(format!(
                    "{} {} {} was answered {}{}: the case's setup failed",
                    request.label,
                    request.method,
                    request.path,
                    answer.status,
                    problem_type(&answer)
                        .map(|kind| format!(" ({kind})"))
                        .unwrap_or_default()
                ));
            }
        }
        if case
            .receiver
            .as_ref()
            .is_some_and(|behaviour| behaviour.await_refusal)
        {
            self.await_refusals(&referrals).await?;
        }
        let answer = self.send(&when, exchanges).await?;

        let mut failures = Vec::new();
        if answer.status != case.then.status {
            failures.push(format!(
                "expected status {}, got {}{}",
                case.then.status,
                answer.status,
                problem_type(&answer)
                    .map(|kind| format!(" (problem type {kind})"))
                    .unwrap_or_default()
            ));
        }
        if let Some(expected) = &case.then.problem_type {
            match problem_type(&answer) {
                Some(kind) if &kind == expected => {}
                Some(kind) => {
                    failures.push(format!("expected problem type {expected}, got {kind}"))
                }
                None => failures.push(format!(
                    "expected a problem+json answer of type {expected}, got none"
                )),
            }
        }
        for (name, value) in &expected_headers {
            match answer.headers.iter().find(|(header, _)| header == name) {
                Some((_, actual)) if actual == value => {}
                Some((_, actual)) => failures.push(format!(
                    "expected header {name}: {value}, got {name}: {actual}"
                )),
                None => failures.push(format!("expected header {name}: {value}, got none")),
            }
        }
        if let Some(checks) = &expected_body {
            match serde_json::from_slice::<Value>(&answer.body) {
                Ok(body) => check_json(&body, checks, "the answer", &mut failures),
                Err(_) => failures.push("the answer's body is not JSON".to_owned()),
            }
        }

        if !delivered.is_empty() {
            self.await_deliveries(&delivered).await;
            for message in self.capture.about(&referrals) {
                exchanges.push(delivery_exchange(&message, self.capture.address()));
            }
            for delivery in &delivered {
                self.check_delivery(delivery, when.json.as_ref(), &mut failures);
            }
        }
        Ok(failures)
    }

    /// Waits until the receiver has refused an attempt of each of
    /// `referrals`: the case's setup fails if one has not come in time.
    async fn await_refusals(&self, referrals: &[String]) -> Result<(), String> {
        let deadline = Instant::now() + self.options.wait;
        loop {
            let arrived = self.capture.about(referrals);
            let waiting = referrals.iter().find(|referral| {
                !arrived
                    .iter()
                    .any(|message| &message.referral == *referral && message.status >= 400)
            });
            let Some(referral) = waiting else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "no attempt to deliver referral {referral} reached the receiver within {} s: the case's setup failed",
                    self.options.wait.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every expected delivery has arrived (or the wait is
    /// over), then the settle time, so that a message too many or one that
    /// must not come has had its chance to arrive.
    async fn await_deliveries(&self, delivered: &[Delivery]) {
        let deadline = Instant::now() + self.options.wait;
        while Instant::now() < deadline {
            let complete = delivered
                .iter()
                .all(|delivery| distinct(&self.accepted(delivery)) >= delivery.count);
            if complete {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(self.options.settle).await;
    }

    /// The messages for an expectation that the receiver acknowledged or
    /// refused for their signature (a scripted failure is not an arrival).
    fn accepted(&self, delivery: &Delivery) -> Vec<Received> {
        self.capture
            .received(&delivery.to, &delivery.kind, &delivery.referral)
            .into_iter()
            .filter(|message| message.signature_problem.is_some() || message.status < 300)
            .collect()
    }

    fn check_delivery(
        &self,
        delivery: &Delivery,
        sent: Option<&Value>,
        failures: &mut Vec<String>,
    ) {
        let what = format!("{} for {}", delivery.kind, delivery.to);
        let messages = self.accepted(delivery);
        for message in &messages {
            if let Some(problem) = message.signature_problem {
                failures.push(format!(
                    "the {what} (webhook-id {}) has a bad signature: {problem}",
                    message.webhook_id
                ));
            }
        }
        let count = distinct(&messages);
        if count != delivery.count {
            failures.push(format!(
                "expected {} {what} (distinct webhook-ids), got {count}",
                delivery.count
            ));
        }
        let Some(last) = messages.last() else {
            return;
        };
        let Ok(body) = serde_json::from_slice::<Value>(&last.body) else {
            if !delivery.checks.is_empty() || !delivery.pseudonymised.is_empty() {
                failures.push(format!("the {what} is not JSON"));
            }
            return;
        };
        check_json(&body, &delivery.checks, &format!("the {what}"), failures);
        for pointer in &delivery.pseudonymised {
            let sent_value = sent.and_then(|sent| sent.pointer(pointer));
            match body.pointer(pointer) {
                None => failures.push(format!(
                    "the {what} lacks {pointer} (expected pseudonymised)"
                )),
                Some(value) if Some(value) == sent_value => failures.push(format!(
                    "the {what} carries {pointer} as sent, not pseudonymised"
                )),
                Some(value) if !value.is_string() => failures.push(format!(
                    "the {what} carries {pointer} as a {}, not a pseudonym",
                    kind_of(value)
                )),
                Some(_) => {}
            }
        }
    }

    fn prepare(
        &self,
        request: &Request,
        label: String,
        placeholders: &mut Placeholders,
    ) -> Result<Prepared, String> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("{label}: {:?} is not an HTTP method", request.method))?;
        let mut headers = BTreeMap::new();
        for (name, value) in &request.headers {
            headers.insert(name.to_ascii_lowercase(), placeholders.fill(value)?);
        }
        let (body, json) = match &request.body {
            None => (None, None),
            Some(body) => {
                let (bytes, json) = self
                    .body(body, placeholders)
                    .map_err(|error| format!("{label}: {error}"))?;
                if json.is_some() {
                    headers
                        .entry("content-type".to_owned())
                        .or_insert_with(|| "application/json".to_owned());
                }
                (Some(bytes), json)
            }
        };
        Ok(Prepared {
            label,
            organisation: request.organisation.clone(),
            api_key: request.api_key.clone(),
            method,
            path: placeholders.fill(&request.path)?,
            headers,
            body,
            json,
        })
    }

    fn body(
        &self,
        body: &Body,
        placeholders: &mut Placeholders,
    ) -> Result<(Vec<u8>, Option<Value>), String> {
        let mut json = match (&body.fixture, &body.json, &body.text) {
            (Some(fixture), None, None) => {
                let path = self.suite.root.join("fixtures").join(fixture);
                let bytes =
                    std::fs::read(&path).map_err(|error| format!("fixture {fixture}: {error}"))?;
                if path
                    .extension()
                    .is_some_and(|extension| extension == "json")
                {
                    serde_json::from_slice::<Value>(&bytes)
                        .map_err(|error| format!("fixture {fixture}: {error}"))?
                } else {
                    let text = String::from_utf8(bytes)
                        .map_err(|_| format!("fixture {fixture}: not UTF-8 text"))?;
                    return Ok((placeholders.fill(&text)?.into_bytes(), None));
                }
            }
            (None, Some(json), None) => json.clone(),
            (None, None, Some(text)) => return Ok((placeholders.fill(text)?.into_bytes(), None)),
            _ => return Err("a body has exactly one of fixture, json or text".to_owned()),
        };
        for (pointer, value) in &body.set {
            set_pointer(&mut json, pointer, value.clone())?;
        }
        for pointer in &body.remove {
            remove_pointer(&mut json, pointer)?;
        }
        let json = placeholders.fill_json(&json)?;
        let bytes = serde_json::to_vec(&json).map_err(|error| error.to_string())?;
        Ok((bytes, Some(json)))
    }

    async fn send(
        &self,
        request: &Prepared,
        exchanges: &mut Vec<Exchange>,
    ) -> Result<Answer, String> {
        let url = format!(
            "{}{}",
            self.options.target.trim_end_matches('/'),
            request.path
        );
        let key = match (&request.api_key, &request.organisation) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(organisation)) => Some(
                self.suite
                    .organisation(organisation)
                    .ok_or_else(|| format!("unknown organisation {organisation}"))?
                    .api_key
                    .clone(),
            ),
            (None, None) => None,
        };
        let mut builder = self.client.request(request.method.clone(), &url);
        let mut shown_headers = Vec::new();
        if let Some(key) = &key {
            builder = builder.bearer_auth(key);
            shown_headers.push(("authorization".to_owned(), "Bearer ***".to_owned()));
        }
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
            shown_headers.push((name.clone(), value.clone()));
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let content_type = request.headers.get("content-type").map(String::as_str);
        let request_body = request
            .body
            .as_deref()
            .map(|body| mask_body(content_type, body))
            .unwrap_or_default();
        let mut exchange = Exchange {
            label: request.label.clone(),
            method: request.method.to_string(),
            url: url.clone(),
            request_headers: mask_headers(&shown_headers),
            curl: Some(curl(request, &url, &shown_headers, &request_body)),
            request_body,
            status: None,
            response_headers: Vec::new(),
            response_body: String::new(),
        };
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => {
                exchanges.push(exchange);
                return Err(format!(
                    "{} {} {}: no answer from the target: {}",
                    request.label,
                    request.method,
                    request.path,
                    error_chain(&error)
                ));
            }
        };
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .bytes()
            .await
            .map(|body| body.to_vec())
            .unwrap_or_default();
        let response_type = headers
            .iter()
            .find(|(name, _)| name == "content-type")
            .map(|(_, value)| value.as_str());
        exchange.status = Some(status);
        exchange.response_headers = mask_headers(&headers);
        exchange.response_body = mask_body(response_type, &body);
        exchanges.push(exchange);
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

fn fill_checks(checks: &JsonChecks, placeholders: &mut Placeholders) -> Result<JsonChecks, String> {
    Ok(JsonChecks {
        present: checks.present.clone(),
        absent: checks.absent.clone(),
        equals: checks
            .equals
            .iter()
            .map(|(pointer, value)| Ok((pointer.clone(), placeholders.fill_json(value)?)))
            .collect::<Result<_, String>>()?,
    })
}

fn check_json(body: &Value, checks: &JsonChecks, what: &str, failures: &mut Vec<String>) {
    for pointer in &checks.present {
        if body.pointer(pointer).is_none() {
            failures.push(format!("{what} lacks {pointer}"));
        }
    }
    for pointer in &checks.absent {
        if body.pointer(pointer).is_some() {
            failures.push(format!("{what} carries {pointer}, which must not be there"));
        }
    }
    for (pointer, expected) in &checks.equals {
        // Expected values are the suite's own (codes, ids, states); what the
        // target sent may be personal data, so only a code is shown.
        match body.pointer(pointer) {
            Some(actual) if actual == expected => {}
            Some(Value::String(code)) if is_code(code) => {
                failures.push(format!(
                    "{what}: {pointer} is \"{code}\", expected {expected}"
                ));
            }
            Some(actual) => failures.push(format!(
                "{what}: {pointer} is another {} (not shown), expected {expected}",
                kind_of(actual)
            )),
            None => failures.push(format!("{what} lacks {pointer} (expected {expected})")),
        }
    }
}

/// An enumeration value (`OBSTACLE_DOMAIN_HEALTH`): never personal data.
fn is_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_')
}

/// The last segment of a problem answer's `type`.
fn problem_type(answer: &Answer) -> Option<String> {
    let body: Value = serde_json::from_slice(&answer.body).ok()?;
    let kind = body.get("type")?.as_str()?;
    Some(kind.rsplit('/').next().unwrap_or(kind).to_owned())
}

fn distinct(messages: &[Received]) -> usize {
    let mut ids: Vec<&str> = messages
        .iter()
        .map(|message| message.webhook_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn delivery_exchange(message: &Received, receiver: SocketAddr) -> Exchange {
    Exchange {
        label: format!("delivered to {} ({})", message.organisation, message.kind),
        method: "POST".to_owned(),
        url: format!("http://{receiver}/receiver/{}", message.organisation),
        request_headers: mask_headers(&message.headers),
        request_body: mask_body(message.content_type(), &message.body),
        status: Some(message.status),
        response_headers: Vec::new(),
        response_body: message
            .signature_problem
            .map(|problem| format!("refused by the runner: {problem}"))
            .unwrap_or_default(),
        curl: None,
    }
}

/// A curl line replaying a request: the key from an environment variable,
/// the body as masked.
fn curl(request: &Prepared, url: &str, headers: &[(String, String)], body: &str) -> String {
    let mut line = format!("curl -sS -X {} {}", request.method, shell_quote(url));
    for (name, value) in headers {
        let value = if name == "authorization" {
            "Bearer $PASSERELLE_API_KEY"
        } else {
            value.as_str()
        };
        line.push_str(&format!(" -H {}", shell_quote(&format!("{name}: {value}"))));
    }
    if request.body.is_some() {
        line.push_str(&format!(" --data-binary {}", shell_quote(body)));
    }
    line
}

/// Single-quoted for a POSIX shell — except `$PASSERELLE_API_KEY`, which is
/// left outside the quotes so that the shell expands it.
fn shell_quote(text: &str) -> String {
    let quoted = format!("'{}'", text.replace('\'', r"'\''"));
    quoted.replace("$PASSERELLE_API_KEY", "'\"$PASSERELLE_API_KEY\"'")
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

/// Sets `value` at `pointer`, creating the objects on the way; `-` appends
/// to an array.
fn set_pointer(document: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    let tokens = tokens(pointer)?;
    let Some((last, parents)) = tokens.split_last() else {
        *document = value;
        return Ok(());
    };
    let mut current = document;
    for token in parents {
        current = match current {
            Value::Object(fields) => fields
                .entry(token.clone())
                .or_insert_with(|| Value::Object(serde_json::Map::new())),
            Value::Array(items) => {
                let index: usize = token
                    .parse()
                    .map_err(|_| format!("set {pointer}: {token} is not an index"))?;
                items
                    .get_mut(index)
                    .ok_or_else(|| format!("set {pointer}: no item {index}"))?
            }
            _ => return Err(format!("set {pointer}: {token} is under a scalar")),
        };
    }
    match current {
        Value::Object(fields) => {
            fields.insert(last.clone(), value);
        }
        Value::Array(items) if last == "-" => items.push(value),
        Value::Array(items) => {
            let index: usize = last
                .parse()
                .map_err(|_| format!("set {pointer}: {last} is not an index"))?;
            *items
                .get_mut(index)
                .ok_or_else(|| format!("set {pointer}: no item {index}"))? = value;
        }
        _ => return Err(format!("set {pointer}: the parent is a scalar")),
    }
    Ok(())
}

/// Removes what `pointer` names; an error when there is nothing there, so a
/// case cannot silently test the wrong thing.
fn remove_pointer(document: &mut Value, pointer: &str) -> Result<(), String> {
    let (parent, last) = pointer
        .rsplit_once('/')
        .ok_or_else(|| format!("remove {pointer}: not a JSON pointer"))?;
    let last = unescape(last);
    let removed = match document.pointer_mut(parent) {
        Some(Value::Object(fields)) => fields.remove(&last).is_some(),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(index) if index < items.len() => {
                items.remove(index);
                true
            }
            _ => false,
        },
        _ => false,
    };
    if removed {
        Ok(())
    } else {
        Err(format!("remove {pointer}: nothing there"))
    }
}

fn tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("{pointer:?} is not a JSON pointer"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_set_create_and_remove_refuses_nothing() {
        let mut document = serde_json::json!({"person": {"names": ["a"]}});
        set_pointer(&mut document, "/person/contact/email", Value::from("x")).expect("set");
        set_pointer(&mut document, "/person/names/-", Value::from("b")).expect("append");
        set_pointer(&mut document, "/person/names/0", Value::from("c")).expect("replace");
        assert_eq!(
            document,
            serde_json::json!({"person": {"names": ["c", "b"], "contact": {"email": "x"}}})
        );
        remove_pointer(&mut document, "/person/names/1").expect("remove");
        remove_pointer(&mut document, "/person/contact").expect("remove");
        assert_eq!(document, serde_json::json!({"person": {"names": ["c"]}}));
        assert!(remove_pointer(&mut document, "/person/nir").is_err());
        assert!(set_pointer(&mut document, "/person/names/7", Value::Null).is_err());
    }

    #[test]
    fn curl_lines_quote_bodies_and_leave_the_key_to_the_shell() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            shell_quote("authorization: Bearer $PASSERELLE_API_KEY"),
            "'authorization: Bearer '\"$PASSERELLE_API_KEY\"''"
        );
    }
}
