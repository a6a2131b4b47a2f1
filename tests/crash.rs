//! The crash test: load the gateway, kill -9 it mid-stream, restart it on
//! the same store, and count at the receiver that every referral answered
//! 202 arrived, each under one webhook id, and that nothing arrived that was
//! not submitted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use common::gateway::{Options, TestGateway, bearer, new_id, referral, store_consent};
use common::receiver::Receiver;
use reqwest::StatusCode;

const KONEXIO: &str = "konexio-saint-denis";
const FRANCE_TRAVAIL: &str = "france-travail-saint-denis";
const SECRET_VARIABLE: &str = "PASSERELLE_TEST_WEBHOOK_SECRET";

fn options(receiver: &Receiver, secret: &str) -> Options {
    Options {
        organisation_toml: vec![(
            FRANCE_TRAVAIL,
            format!(
                "[organisation.delivery]\nmode = \"webhook\"\nurl = \"{}\"\nformat = \"passerelle-v2\"\nsecret = \"env:{SECRET_VARIABLE}\"\nmax_attempts = 1000\ntimeout_seconds = 2\n",
                receiver.url
            ),
        )],
        extra_toml: "\n[delivery]\npoll_interval_milliseconds = 50\nbase_delay_milliseconds = 50\nmax_delay_seconds = 1\n".to_owned(),
        environment: vec![(SECRET_VARIABLE.to_owned(), secret.to_owned())],
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_accepted_referral_and_invents_none() {
    let receiver = Receiver::start().await;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(new_id())
    );
    let mut gateway = TestGateway::start_with(options(&receiver, &secret));
    let http = gateway.client();
    let record_id = store_consent(&gateway).await;

    // Eight senders submit as fast as they can until the gateway dies.
    let (answered, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let (tried, mut attempts) = tokio::sync::mpsc::unbounded_channel();
    let url = gateway.url("/v1/referrals");
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (http, url, record_id) = (http.clone(), url.clone(), record_id.clone());
        let (answered, tried) = (answered.clone(), tried.clone());
        senders.push(tokio::spawn(async move {
            for _ in 0..500 {
                let referral_id = new_id();
                let _ = tried.send(referral_id.clone());
                let response = http
                    .post(&url)
                    .header("authorization", bearer(KONEXIO))
                    .header(
                        "content-type",
                        "application/vnd.passerelle.referral.v2+json",
                    )
                    .json(&referral(&referral_id, &record_id))
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status() == StatusCode::ACCEPTED => {
                        let _ = answered.send(referral_id);
                    }
                    _ => break,
                }
            }
        }));
    }
    drop((answered, tried));
    let mut accepted = BTreeSet::new();
    while accepted.len() < 150 {
        accepted.insert(answers.recv().await.expect("referrals are accepted"));
    }
    gateway.kill();
    for sender in senders {
        sender.await.expect("sender");
    }
    while let Ok(referral_id) = answers.try_recv() {
        accepted.insert(referral_id);
    }
    let mut submitted = BTreeSet::new();
    while let Ok(referral_id) = attempts.try_recv() {
        submitted.insert(referral_id);
    }
    let delivered_before = receiver.accepted().len();

    // Restart on the same store: the outbox resumes.
    let (dir, pki, store) = gateway.stop_owned();
    let mut restarted = TestGateway::start_in(
        dir,
        pki,
        Options {
            store: Some(store),
            ..options(&receiver, &secret)
        },
    );
    let all_arrived = receiver
        .wait_for(
            |received| {
                let ids: BTreeSet<&str> = received
                    .iter()
                    .filter(|push| push.status == 200)
                    .map(|push| push.id.as_str())
                    .collect();
                accepted.iter().all(|id| ids.contains(id.as_str()))
            },
            Duration::from_secs(120),
        )
        .await;
    // Let anything still queued arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    restarted.terminate();
    let received = receiver.accepted();
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for push in &received {
        *per_id.entry(push.id.clone()).or_default() += 1;
        // Each push carries the referral its id names: one id, one referral.
        let body: serde_json::Value = serde_json::from_slice(&push.body).expect("JSON");
        assert_eq!(body["referral_id"].as_str(), Some(push.id.as_str()));
    }
    let arrived: BTreeSet<String> = per_id.keys().cloned().collect();
    let missing: Vec<&String> = accepted.difference(&arrived).collect();
    assert!(
        all_arrived && missing.is_empty(),
        "{} referral(s) answered 202 never arrived: {missing:?}",
        missing.len()
    );
    let invented: Vec<&String> = arrived.difference(&submitted).collect();
    assert!(
        invented.is_empty(),
        "arrived but never submitted: {invented:?}"
    );
    println!(
        "accepted (202) {}, submitted {}, arrived {} distinct ids ({} before the kill), pushes answered 200: {}",
        accepted.len(),
        submitted.len(),
        arrived.len(),
        delivered_before,
        received.len()
    );
}
