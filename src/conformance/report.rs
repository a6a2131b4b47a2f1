//! A run's report in three forms: JUnit XML for CI dashboards, JSON (the
//! [`RunReport`] itself, for tools), and one self-contained HTML page for the
//! people who must fix what failed.
//!
//! The bodies and headers in a report are masked when the runner records
//! them (see [`super::mask`]); this module only lays them out. Every text of
//! the HTML page goes through [`escape`]: case ids, messages and bodies come
//! from the suite and from the target, and a target's answer is free to hold
//! markup.
//!
//! The HTML page loads nothing: its style is inline and it has no script, so
//! it opens the same from a CI artefact, a mail attachment or a file share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{CaseResult, Exchange, Level, Outcome, Requirement, RunReport};

/// JUnit XML: one test suite per level and topic (`must.consent`), one test
/// case per case, named by its id, with its failures, its error or its skip
/// reason, and its time.
pub fn junit(report: &RunReport) -> Result<String, String> {
    let mut junit = Report::new(format!("{} ({})", report.suite, report.mode));
    if let Ok(started) = chrono::DateTime::parse_from_rfc3339(&report.started_at) {
        junit.set_timestamp(started);
    }
    junit.set_time(Duration::from_millis(report.duration_ms));
    // Suites in the order their first case runs.
    let mut suites: Vec<(String, Vec<&CaseResult>)> = Vec::new();
    for case in &report.cases {
        let name = class_name(case);
        match suites.iter_mut().find(|(suite, _)| *suite == name) {
            Some((_, cases)) => cases.push(case),
            None => suites.push((name, vec![case])),
        }
    }
    for (name, cases) in suites {
        let mut suite = TestSuite::new(name.as_str());
        suite.set_time(Duration::from_millis(
            cases.iter().map(|case| case.duration_ms).sum(),
        ));
        suite.add_property(Property::new("mode", report.mode.as_str()));
        suite.add_property(Property::new("target", report.target.as_str()));
        suite.add_test_cases(cases.into_iter().map(test_case));
        junit.add_test_suite(suite);
    }
    junit
        .to_string()
        .map_err(|error| format!("the JUnit report could not be serialised: {error}"))
}

/// `must.consent`: the level and topic of a case.
fn class_name(case: &CaseResult) -> String {
    format!("{}.{}", case.level.as_str(), case.topic)
}

fn test_case(case: &CaseResult) -> TestCase {
    let status = match &case.outcome {
        Outcome::Passed => TestCaseStatus::success(),
        Outcome::Failed { failures } => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let message = match failures.as_slice() {
                [only] => only.clone(),
                all => format!(
                    "{} expectations did not hold: {}",
                    all.len(),
                    all.join("; ")
                ),
            };
            status
                .set_message(message)
                .set_type("conformance failure")
                .set_description(failures.join("\n"));
            status
        }
        Outcome::Error { message } => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status
                .set_message(message.as_str())
                .set_type("conformance error");
            status
        }
        Outcome::Skipped { reason } => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(reason.as_str());
            status
        }
    };
    let mut test_case = TestCase::new(case.id.as_str(), status);
    test_case
        .set_classname(class_name(case))
        .set_time(Duration::from_millis(case.duration_ms));
    test_case.add_property(Property::new("title", case.title.as_str()));
    for requirement in &case.requirements {
        test_case.add_property(Property::new("requirement", requirement.as_str()));
    }
    if case.outcome.is_failure() && !case.exchanges.is_empty() {
        test_case.set_system_out(exchanges_as_text(&case.exchanges));
    }
    test_case
}

/// The exchanges of a failed case, one line each and its curl line, for
/// the JUnit `system-out` a CI page shows under the failure.
fn exchanges_as_text(exchanges: &[Exchange]) -> String {
    let mut text = String::new();
    for exchange in exchanges {
        let status = exchange
            .status
            .map_or_else(|| "no answer".to_owned(), |status| status.to_string());
        text.push_str(&format!(
            "{}: {} {} -> {status}\n",
            exchange.label, exchange.method, exchange.url
        ));
        if let Some(curl) = &exchange.curl {
            text.push_str(&format!("    {curl}\n"));
        }
    }
    text
}

/// The report as pretty JSON; it reads back into a [`RunReport`].
pub fn json(report: &RunReport) -> String {
    // Strings, numbers, lists and string-keyed structs only: serialising
    // cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_else(|error| {
        serde_json::json!({ "error": format!("the report could not be serialised: {error}") })
            .to_string()
    })
}

/// Text made safe for HTML content and quoted attribute values: `&`, `<`,
/// `>`, `"` and `'` become character references.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// How an outcome is shown: a CSS class, a symbol and a word, so that colour
/// is never the only signal.
fn outcome_label(outcome: &Outcome) -> (&'static str, &'static str, &'static str) {
    match outcome {
        Outcome::Passed => ("passed", "\u{2714}", "PASSED"),
        Outcome::Failed { .. } => ("failed", "\u{2718}", "FAILED"),
        Outcome::Error { .. } => ("error", "\u{26a0}", "ERROR"),
        Outcome::Skipped { .. } => ("skipped", "\u{2013}", "SKIPPED"),
    }
}

fn outcome_badge(outcome: &Outcome) -> String {
    let (class, symbol, word) = outcome_label(outcome);
    format!(r#"<span class="badge {class}"><span aria-hidden="true">{symbol}</span> {word}</span>"#)
}

fn level_badge(level: Level) -> String {
    format!(
        r#"<span class="badge level">{}</span>"#,
        level.as_str().to_ascii_uppercase()
    )
}

/// `850 ms`, `12.3 s`, `2 min 05 s`.
fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1_000.0),
        _ => format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1_000),
    }
}

const STYLE: &str = r#"
:root { color-scheme: light; --pass: #17663a; --pass-bg: #e6f4ea; --fail: #a4161a; --fail-bg: #fdeaea;
  --error: #8a4b00; --error-bg: #fff1dc; --skip: #4a4f57; --skip-bg: #eef0f3; --line: #c9ced6; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; color: #1b1f24;
  margin: 0 auto; padding: 1.5rem; max-width: 72rem; background: #fff; }
h1 { font-size: 1.7rem; margin: 0 0 .5rem; }
h2 { font-size: 1.35rem; margin: 2.2rem 0 .8rem; padding-bottom: .3rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.1rem; margin: 0 0 .5rem; }
h4 { font-size: 1rem; margin: 1rem 0 .4rem; }
h5 { font-size: .95rem; margin: .8rem 0 .3rem; }
a { color: #0b57b0; }
code, pre { font: 13px/1.45 ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 4px; padding: .6rem .8rem; margin: .3rem 0;
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 32rem; overflow: auto; }
.verdict { font-size: 1.35rem; font-weight: 700; padding: .8rem 1rem; border-radius: 6px; border: 3px solid; margin: .8rem 0; }
.verdict.conforms { color: var(--pass); background: var(--pass-bg); }
.verdict.fails { color: var(--fail); background: var(--fail-bg); }
dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: .8rem 0; }
dl.summary dt { font-weight: 600; }
dl.summary dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1.2rem; }
th, td { border: 1px solid var(--line); padding: .35rem .55rem; text-align: left; vertical-align: top; }
thead th { background: #f0f2f5; }
caption { text-align: left; padding: .4rem 0; }
table.counts { width: auto; }
table.counts td { font-size: 1.3rem; font-weight: 700; text-align: center; min-width: 6rem; }
.req-text { display: block; margin-top: .25rem; }
.req-source { display: block; color: #4a4f57; font-size: .9rem; }
.req-id { font-weight: 700; font-size: 1.05rem; }
.badge { display: inline-block; font-size: .8rem; font-weight: 700; padding: .05rem .45rem; border-radius: 3px;
  border: 1px solid; white-space: nowrap; }
.badge.passed { color: var(--pass); background: var(--pass-bg); }
.badge.failed { color: var(--fail); background: var(--fail-bg); }
.badge.error { color: var(--error); background: var(--error-bg); }
.badge.skipped, .badge.unchecked { color: var(--skip); background: var(--skip-bg); }
.badge.level { color: #1b1f24; background: #fff; }
article.case { border: 1px solid var(--line); border-left: 6px solid var(--skip); border-radius: 4px;
  padding: .8rem 1rem; margin: 0 0 1rem; }
article.case.failed { border-left-color: var(--fail); }
article.case.error { border-left-color: var(--error); }
article.case.passed { border-left-color: var(--pass); }
dl.meta { display: flex; flex-wrap: wrap; gap: .2rem 1.2rem; margin: .2rem 0; font-size: .9rem; }
dl.meta dt { font-weight: 600; }
dl.meta dt::after { content: ":"; }
dl.meta dd { margin: 0 0 0 -.9rem; }
ul.messages li { margin: .2rem 0; }
details.exchange { border: 1px solid var(--line); border-radius: 4px; padding: .3rem .7rem; margin: .4rem 0; }
details.exchange > summary { cursor: pointer; font-weight: 600; overflow-wrap: anywhere; }
table.headers { font-size: .85rem; margin: .2rem 0 .4rem; }
table.headers th { width: 16rem; font-weight: 600; }
table.headers td { overflow-wrap: anywhere; }
.empty { color: #4a4f57; font-style: italic; margin: .2rem 0; }
footer { margin-top: 2.5rem; font-size: .85rem; color: #4a4f57; }
"#;

/// One self-contained HTML5 page: the verdict and counts, a table per
/// requirement, then every case, failures first, with their exchanges.
pub fn html(report: &RunReport) -> String {
    let (passed, failed, skipped) = report.counts();
    let errors = report
        .cases
        .iter()
        .filter(|case| matches!(case.outcome, Outcome::Error { .. }))
        .count();
    let verdict = if report.conforms() {
        r#"<p class="verdict conforms" id="verdict"><span aria-hidden="true">&#x2714;</span> CONFORMS: no case failed.</p>"#.to_owned()
    } else {
        format!(
            r#"<p class="verdict fails" id="verdict"><span aria-hidden="true">&#x2718;</span> DOES NOT CONFORM: {failed} case{} failed.</p>"#,
            if failed == 1 { "" } else { "s" }
        )
    };
    let mut page = String::with_capacity(64 * 1024);
    page.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Conformance report: {} ({}): {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&report.suite),
        escape(&report.mode),
        if report.conforms() {
            "conforms"
        } else {
            "does not conform"
        }
    ));

    // Summary.
    page.push_str("<header>\n<h1>Passerelle conformance report</h1>\n");
    page.push_str(&verdict);
    page.push_str(&format!(
        "\n<dl class=\"summary\">\n<dt>Mode</dt><dd>{}</dd>\n<dt>Suite</dt><dd>{}</dd>\n\
         <dt>Target</dt><dd>{}</dd>\n<dt>Started</dt><dd>{}</dd>\n<dt>Duration</dt><dd>{}</dd>\n</dl>\n",
        escape(&report.mode),
        escape(&report.suite),
        escape(&report.target),
        escape(&report.started_at),
        duration(report.duration_ms),
    ));
    page.push_str(&format!(
        "<table class=\"counts\">\n<caption>Cases of this run</caption>\n<thead><tr>\
         <th scope=\"col\">Passed</th><th scope=\"col\">Failed{}</th><th scope=\"col\">Skipped</th>\
         <th scope=\"col\">Total</th></tr></thead>\n<tbody><tr><td id=\"count-passed\">{passed}</td>\
         <td id=\"count-failed\">{failed}</td><td id=\"count-skipped\">{skipped}</td>\
         <td id=\"count-total\">{}</td></tr></tbody>\n</table>\n",
        if errors > 0 {
            format!(" (of which {errors} in error)")
        } else {
            String::new()
        },
        report.cases.len()
    ));
    page.push_str(
        "<p>Bodies and headers are masked: personal values show as <code>***</code>; ids, \
         states, field paths, problem documents and organisation numbers stay.</p>\n",
    );
    page.push_str(&format!(
        "<nav aria-label=\"Contents\"><ul>\n<li><a href=\"#requirements\">Requirements ({})</a></li>\n\
         <li><a href=\"#failures\">Failures ({failed})</a></li>\n\
         <li><a href=\"#skipped\">Skipped ({skipped})</a></li>\n\
         <li><a href=\"#passed\">Passed ({passed})</a></li>\n</ul></nav>\n</header>\n<main>\n",
        report.requirements.len()
    ));

    requirements_section(report, &mut page);

    // Failures first, then skipped cases, then passed ones.
    let indexed = || report.cases.iter().enumerate();
    page.push_str(&format!(
        "<section id=\"failures\" aria-labelledby=\"failures-heading\">\n\
         <h2 id=\"failures-heading\">Failures ({failed})</h2>\n"
    ));
    if failed == 0 {
        page.push_str("<p class=\"empty\">No case failed.</p>\n");
    }
    for (index, case) in indexed().filter(|(_, case)| case.outcome.is_failure()) {
        case_article(report, index, case, &mut page);
    }
    page.push_str("</section>\n");

    page.push_str(&format!(
        "<section id=\"skipped\" aria-labelledby=\"skipped-heading\">\n\
         <h2 id=\"skipped-heading\">Skipped ({skipped})</h2>\n"
    ));
    if skipped == 0 {
        page.push_str("<p class=\"empty\">No case was skipped.</p>\n");
    } else {
        page.push_str(
            "<table class=\"skipped\">\n<caption>Cases not run, and why</caption>\n<thead><tr>\
             <th scope=\"col\">Case</th><th scope=\"col\">Title</th><th scope=\"col\">Level</th>\
             <th scope=\"col\">Reason</th></tr></thead>\n<tbody>\n",
        );
        for (index, case) in indexed() {
            if let Outcome::Skipped { reason } = &case.outcome {
                page.push_str(&format!(
                    "<tr id=\"case-{index}\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    escape(&case.id),
                    escape(&case.title),
                    level_badge(case.level),
                    escape(reason)
                ));
            }
        }
        page.push_str("</tbody>\n</table>\n");
    }
    page.push_str("</section>\n");

    page.push_str(&format!(
        "<section id=\"passed\" aria-labelledby=\"passed-heading\">\n\
         <h2 id=\"passed-heading\">Passed ({passed})</h2>\n"
    ));
    if passed == 0 {
        page.push_str("<p class=\"empty\">No case passed.</p>\n");
    }
    for (index, case) in indexed().filter(|(_, case)| case.outcome == Outcome::Passed) {
        case_article(report, index, case, &mut page);
    }
    page.push_str("</section>\n</main>\n");

    page.push_str(&format!(
        "<footer><p>Written by passerelle {} (<code>passerelle conformance {} --report</code>).</p></footer>\n\
         </body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        escape(&report.mode)
    ));
    page
}

/// One table per requirement of the suite, then one for each requirement a
/// case names that the suite does not list.
fn requirements_section(report: &RunReport, page: &mut String) {
    page.push_str(
        "<section id=\"requirements\" aria-labelledby=\"requirements-heading\">\n\
         <h2 id=\"requirements-heading\">Requirements</h2>\n",
    );
    let mut requirements: Vec<Requirement> = report.requirements.clone();
    for case in &report.cases {
        for id in &case.requirements {
            if !requirements.iter().any(|requirement| requirement.id == *id) {
                requirements.push(Requirement {
                    id: id.clone(),
                    text: "(not among the suite's requirements)".to_owned(),
                    source: "unknown".to_owned(),
                    level: case.level,
                });
            }
        }
    }
    if requirements.is_empty() {
        page.push_str("<p class=\"empty\">The report lists no requirement.</p>\n");
    }
    for (number, requirement) in requirements.iter().enumerate() {
        let cases: Vec<(usize, &CaseResult)> = report
            .cases
            .iter()
            .enumerate()
            .filter(|(_, case)| case.requirements.contains(&requirement.id))
            .collect();
        let failed = cases
            .iter()
            .filter(|(_, case)| case.outcome.is_failure())
            .count();
        let passed = cases
            .iter()
            .filter(|(_, case)| case.outcome == Outcome::Passed)
            .count();
        let status = if failed > 0 {
            format!(
                r#"<span class="badge failed"><span aria-hidden="true">&#x2718;</span> NOT MET</span> {failed} of {} cases failed"#,
                cases.len()
            )
        } else if passed > 0 {
            format!(
                r#"<span class="badge passed"><span aria-hidden="true">&#x2714;</span> MET</span> {passed} case{} passed"#,
                if passed == 1 { "" } else { "s" }
            )
        } else if cases.is_empty() {
            r#"<span class="badge unchecked">NOT CHECKED</span> no case of this run checks it"#
                .to_owned()
        } else {
            r#"<span class="badge unchecked">NOT CHECKED</span> every case checking it was skipped"#
                .to_owned()
        };
        page.push_str(&format!(
            "<table class=\"requirement\" id=\"req-{number}\">\n<caption><span class=\"req-id\">{}</span> \
             {} {status}<span class=\"req-text\">{}</span><span class=\"req-source\">Source: {}</span>\
             </caption>\n",
            escape(&requirement.id),
            level_badge(requirement.level),
            escape(&requirement.text),
            escape(&requirement.source),
        ));
        page.push_str(
            "<thead><tr><th scope=\"col\">Case</th><th scope=\"col\">Title</th>\
             <th scope=\"col\">Level</th><th scope=\"col\">Outcome</th></tr></thead>\n<tbody>\n",
        );
        if cases.is_empty() {
            page.push_str("<tr><td colspan=\"4\" class=\"empty\">No case.</td></tr>\n");
        }
        for (index, case) in cases {
            page.push_str(&format!(
                "<tr><td><a href=\"#case-{index}\"><code>{}</code></a></td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&case.id),
                escape(&case.title),
                level_badge(case.level),
                outcome_badge(&case.outcome),
            ));
        }
        page.push_str("</tbody>\n</table>\n");
    }
    page.push_str("</section>\n");
}

/// A case with its outcome, its messages and its exchanges (open for a
/// failure, folded for a pass).
fn case_article(report: &RunReport, index: usize, case: &CaseResult, page: &mut String) {
    let (class, _, _) = outcome_label(&case.outcome);
    page.push_str(&format!(
        "<article class=\"case {class}\" id=\"case-{index}\" aria-labelledby=\"case-{index}-heading\">\n\
         <h3 id=\"case-{index}-heading\">{} <code>{}</code>: {}</h3>\n",
        outcome_badge(&case.outcome),
        escape(&case.id),
        escape(&case.title)
    ));
    let requirements: Vec<String> = case
        .requirements
        .iter()
        .map(|id| {
            match report
                .requirements
                .iter()
                .position(|requirement| requirement.id == *id)
            {
                Some(number) => format!("<a href=\"#req-{number}\">{}</a>", escape(id)),
                None => escape(id),
            }
        })
        .collect();
    page.push_str(&format!(
        "<dl class=\"meta\"><dt>Level</dt><dd>{}</dd><dt>Topic</dt><dd>{}</dd>\
         <dt>Requirements</dt><dd>{}</dd><dt>Time</dt><dd>{}</dd></dl>\n",
        level_badge(case.level),
        escape(&case.topic),
        if requirements.is_empty() {
            "none".to_owned()
        } else {
            requirements.join(", ")
        },
        duration(case.duration_ms)
    ));
    match &case.outcome {
        Outcome::Failed { failures } => {
            page.push_str("<h4>What did not hold</h4>\n<ul class=\"messages\">\n");
            for failure in failures {
                page.push_str(&format!("<li>{}</li>\n", escape(failure)));
            }
            page.push_str("</ul>\n");
        }
        Outcome::Error { message } => {
            page.push_str(&format!(
                "<h4>Why it could not run to its end</h4>\n<ul class=\"messages\"><li>{}</li></ul>\n",
                escape(message)
            ));
        }
        Outcome::Passed | Outcome::Skipped { .. } => {}
    }
    page.push_str(&format!("<h4>Exchanges ({})</h4>\n", case.exchanges.len()));
    if case.exchanges.is_empty() {
        page.push_str("<p class=\"empty\">No exchange was recorded.</p>\n");
    }
    let open = case.outcome.is_failure();
    for exchange in &case.exchanges {
        exchange_details(exchange, open, page);
    }
    page.push_str("</article>\n");
}

fn exchange_details(exchange: &Exchange, open: bool, page: &mut String) {
    let status = exchange
        .status
        .map_or_else(|| "no answer".to_owned(), |status| status.to_string());
    page.push_str(&format!(
        "<details class=\"exchange\"{}>\n<summary>{}: <code>{} {}</code> &#x2192; {}</summary>\n",
        if open { " open" } else { "" },
        escape(&exchange.label),
        escape(&exchange.method),
        escape(&exchange.url),
        escape(&status)
    ));
    page.push_str("<h5>Request</h5>\n");
    headers_table("Request headers", &exchange.request_headers, page);
    body_block("Request body", &exchange.request_body, page);
    match exchange.status {
        Some(status) => page.push_str(&format!("<h5>Response: status {status}</h5>\n")),
        None => page.push_str("<h5>Response: none came</h5>\n"),
    }
    headers_table("Response headers", &exchange.response_headers, page);
    body_block("Response body", &exchange.response_body, page);
    if let Some(curl) = &exchange.curl {
        page.push_str(&format!(
            "<h5>Replay</h5>\n<pre class=\"curl\" aria-label=\"curl command\">{}</pre>\n",
            escape(curl)
        ));
    }
    page.push_str("</details>\n");
}

fn headers_table(caption: &str, headers: &[(String, String)], page: &mut String) {
    if headers.is_empty() {
        return;
    }
    page.push_str(&format!(
        "<table class=\"headers\">\n<caption>{}</caption>\n<tbody>\n",
        escape(caption)
    ));
    for (name, value) in headers {
        page.push_str(&format!(
            "<tr><th scope=\"row\">{}</th><td>{}</td></tr>\n",
            escape(name),
            escape(value)
        ));
    }
    page.push_str("</tbody>\n</table>\n");
}

fn body_block(label: &str, body: &str, page: &mut String) {
    if body.is_empty() {
        page.push_str(&format!(
            "<p class=\"empty\">{}: empty.</p>\n",
            escape(label)
        ));
    } else {
        page.push_str(&format!(
            "<pre class=\"body\" aria-label=\"{}\">{}</pre>\n",
            escape(label),
            escape(body)
        ));
    }
}

/// A report kind of `--report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Junit,
    Json,
    Html,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "junit" => Some(Self::Junit),
            "json" => Some(Self::Json),
            "html" => Some(Self::Html),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Junit => "junit",
            Self::Json => "json",
            Self::Html => "html",
        }
    }
}

/// `junit=F,json=F,html=F`: any of the three, each at most once, none empty.
fn parse_spec(spec: &str) -> Result<Vec<(Kind, PathBuf)>, String> {
    let mut reports: Vec<(Kind, PathBuf)> = Vec::new();
    for item in spec.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "--report: an empty entry in `{spec}`; expected junit=FILE,json=FILE,html=FILE"
            ));
        }
        let Some((name, path)) = item.split_once('=') else {
            return Err(format!(
                "--report: `{item}` is not KIND=FILE (kinds: junit, json, html)"
            ));
        };
        let name = name.trim();
        let Some(kind) = Kind::parse(name) else {
            return Err(format!(
                "--report: unknown report kind `{name}` (kinds: junit, json, html)"
            ));
        };
        if path.trim().is_empty() {
            return Err(format!("--report: the {name} report has no file name"));
        }
        if reports.iter().any(|(seen, _)| *seen == kind) {
            return Err(format!("--report: the {name} report is given twice"));
        }
        reports.push((kind, PathBuf::from(path)));
    }
    Ok(reports)
}

/// Writes the reports `spec` asks for (`junit=FILE,json=FILE,html=FILE`, any
/// subset). The whole spec is checked before anything is written.
pub fn write_reports(report: &RunReport, spec: &str) -> Result<(), String> {
    for (kind, path) in parse_spec(spec)? {
        let text = match kind {
            Kind::Junit => junit(report)?,
            Kind::Json => json(report),
            Kind::Html => html(report),
        };
        write(kind, &path, &text)?;
    }
    Ok(())
}

fn write(kind: Kind, path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|error| {
        format!(
            "cannot write the {} report to {}: {error}",
            kind.as_str(),
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(body: &str) -> Exchange {
        Exchange {
            label: "when".to_owned(),
            method: "POST".to_owned(),
            url: "http://127.0.0.1:8080/v1/referrals".to_owned(),
            request_headers: vec![("authorization".to_owned(), "***".to_owned())],
            request_body: body.to_owned(),
            status: Some(422),
            response_headers: vec![],
            response_body: "{\"type\": \"https://passerelle.eu/problems/validation\"}".to_owned(),
            curl: Some("curl -sS -X POST 'http://127.0.0.1:8080/v1/referrals'".to_owned()),
        }
    }

    fn report() -> RunReport {
        let case = |id: &str, topic: &str, level: Level, outcome: Outcome| CaseResult {
            id: id.to_owned(),
            title: format!("title of {id}"),
            level,
            topic: topic.to_owned(),
            requirements: vec!["CONSENT-01".to_owned()],
            outcome,
            duration_ms: 1_250,
            exchanges: vec![exchange("{\"person\": \"***\"}")],
        };
        RunReport {
            mode: "gateway".to_owned(),
            suite: "passerelle-conformance v1 1.0.0".to_owned(),
            target: "http://127.0.0.1:8080".to_owned(),
            started_at: "2026-12-01T09:15:00Z".to_owned(),
            duration_ms: 4_000,
            requirements: vec![Requirement {
                id: "CONSENT-01".to_owned(),
                text: "A referral without consent is refused.".to_owned(),
                source: "GDPR Art. 6(1)(a)".to_owned(),
                level: Level::Must,
            }],
            cases: vec![
                case("consent-a", "consent", Level::Must, Outcome::Passed),
                case(
                    "consent-b",
                    "consent",
                    Level::Must,
                    Outcome::Failed {
                        failures: vec!["status is 202, expected 422".to_owned()],
                    },
                ),
                case(
                    "delivery-c",
                    "delivery",
                    Level::Should,
                    Outcome::Skipped {
                        reason: "needs a receiver".to_owned(),
                    },
                ),
                case(
                    "consent-d",
                    "consent",
                    Level::Must,
                    Outcome::Error {
                        message: "no answer from the target".to_owned(),
                    },
                ),
            ],
        }
    }

    #[test]
    fn escape_handles_the_five_characters() {
        assert_eq!(
            escape(r#"a & b < c > d " e ' f"#),
            "a &amp; b &lt; c &gt; d &quot; e &#39; f"
        );
        assert_eq!(
            escape("</pre><script>alert('x')</script>"),
            "&lt;/pre&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("Prénom: ***"), "Prénom: ***");
    }

    #[test]
    fn markup_in_ids_and_bodies_never_reaches_the_page_as_markup() {
        let mut report = report();
        report.cases[1].id = "x</pre><script>alert(1)</script>".to_owned();
        report.cases[1].exchanges = vec![exchange("</pre><script>alert(2)</script>")];
        report.target = "\"><img src=x onerror=alert(3)>".to_owned();
        let page = html(&report);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("x&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;/pre&gt;&lt;script&gt;alert(2)&lt;/script&gt;</pre>"));
    }

    #[test]
    fn the_page_is_self_contained_and_states_the_verdict() {
        let page = html(&report());
        assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        for external in ["http-equiv", "<link", "src=", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
        assert!(page.contains("DOES NOT CONFORM: 2 cases failed."));
        assert!(page.contains("<td id=\"count-passed\">1</td>"));
        assert!(page.contains("<td id=\"count-failed\">2</td>"));
        assert!(page.contains("<td id=\"count-skipped\">1</td>"));
        assert!(page.contains("(of which 1 in error)"));
        // Failures come before passes.
        let failure = page
            .find("status is 202, expected 422")
            .expect("failure shown");
        let pass = page.find("title of consent-a</h3>").expect("pass shown");
        assert!(failure < pass);

        let mut passing = report();
        passing.cases.retain(|case| !case.outcome.is_failure());
        assert!(html(&passing).contains("CONFORMS: no case failed."));
    }

    #[test]
    fn junit_groups_cases_by_level_and_topic() {
        let xml = junit(&report()).expect("serialises");
        assert_eq!(xml.matches("<testcase").count(), 4);
        let consent = xml
            .lines()
            .find(|line| line.contains(r#"<testsuite name="must.consent""#))
            .expect("a must.consent suite");
        for attribute in [r#"tests="3""#, r#"failures="1""#, r#"errors="1""#] {
            assert!(consent.contains(attribute), "{consent} lacks {attribute}");
        }
        assert!(xml.contains(r#"name="should.delivery""#));
        assert!(xml.contains(r#"classname="must.consent""#));
        assert!(xml.contains("status is 202, expected 422"));
        assert!(xml.contains("needs a receiver"));
        assert!(xml.contains("no answer from the target"));
    }

    #[test]
    fn json_reads_back() {
        let report = report();
        let back: RunReport = serde_json::from_str(&json(&report)).expect("parses");
        assert_eq!(back, report);
    }

    #[test]
    fn report_specs_are_checked_before_anything_is_written() {
        let parsed = parse_spec("junit=a.xml,html=b.html").expect("valid");
        assert_eq!(
            parsed,
            [
                (Kind::Junit, PathBuf::from("a.xml")),
                (Kind::Html, PathBuf::from("b.html"))
            ]
        );
        for (spec, expected) in [
            ("pdf=a.pdf", "unknown report kind `pdf`"),
            ("json=", "the json report has no file name"),
            ("json=a,json=b", "the json report is given twice"),
            ("json", "`json` is not KIND=FILE"),
            ("", "an empty entry"),
            ("json=a,,html=b", "an empty entry"),
        ] {
            let error = parse_spec(spec).expect_err(spec);
            assert!(error.contains(expected), "{spec}: {error}");
        }
        let dir = std::env::temp_dir().join(format!("passerelle-report-{}", std::process::id()));
        let error = write_reports(
            &report(),
            &format!("json={},pdf=x", dir.join("r.json").display()),
        )
        .expect_err("pdf is unknown");
        assert!(error.contains("pdf"));
        assert!(!dir.join("r.json").exists());
    }
}
