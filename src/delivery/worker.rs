//! The outbox worker: claims due messages for push destinations, re-checks
//! consent, writes each in its destination's format, sends it, and records
//! the outcome — delivered, retried later with exponential backoff and full
//! jitter, dead-lettered after the destination's limits, or cancelled.
//!
//! Every attempt's outcome commits with its audit entry. A message is claimed
//! under a lease; if the gateway dies mid-attempt, the lease runs out and the
//! message is attempted again under the same id: receivers deduplicate on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument;

use super::grpc_push::GrpcSender;
use super::webhook::WebhookSender;
use super::{Attempt, MessageKind, Outbound};
use crate::audit::{AuditEntry, AuditKind};
use crate::config::{DeliveryMode, Organisation};
use crate::consent::ConsentState;
use crate::error::Error;
use crate::formats::{self, Context, FormatOptions};
use crate::gateway::Gateway;
use crate::model::status::StatusEvent;
use crate::model::{Message, v2};
use crate::store::{OutboxMessage, Outcome, ReferralStore, claim_share};

/// Attempts in flight (sent or being sent, outcome not yet committed) per
/// sending permit: recording an outcome waits for a commit, which must not
/// hold a request slot meanwhile.
const IN_FLIGHT_PER_SENDER: usize = 8;

/// The actor named in the audit entries the worker writes.
pub const ACTOR: &str = crate::gateway::GATEWAY_ACTOR;

enum Sender {
    Webhook(WebhookSender),
    Grpc(GrpcSender),
}

/// The outbox worker of one gateway.
pub struct Worker {
    gateway: Arc<Gateway>,
    senders: HashMap<String, Arc<Sender>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field(
                "push_destinations",
                &self.senders.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker with a sender per push destination of the configuration.
    pub async fn new(gateway: Arc<Gateway>) -> Result<Self, Error> {
        let mut senders = HashMap::new();
        for organisation in gateway.config().organisations.iter() {
            let timeout = organisation.delivery.timeout;
            let sender = match &organisation.delivery.mode {
                DeliveryMode::Pull => continue,
                DeliveryMode::Webhook(target) => {
                    Sender::Webhook(WebhookSender::new(target, timeout)?)
                }
                DeliveryMode::Grpc(target) => Sender::Grpc(GrpcSender::new(target, timeout).await?),
            };
            senders.insert(organisation.id.clone(), Arc::new(sender));
        }
        let wake = gateway.outbox_signal();
        Ok(Self {
            gateway,
            senders,
            wake,
        })
    }

    /// Runs until `shutdown` turns true, then lets the attempts in flight finish.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let settings = self.gateway.config().delivery.clone();
        // `sending` bounds the requests to destinations at once; `in_flight`
        // the attempts not yet recorded, which go on waiting for their commit
        // after their request has given its sending permit back.
        let sending = Arc::new(Semaphore::new(settings.concurrency));
        let in_flight_limit = settings.concurrency.saturating_mul(IN_FLIGHT_PER_SENDER);
        let in_flight = Arc::new(Semaphore::new(in_flight_limit));
        let worker = Arc::new(self);
        let mut depth_measured: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            // The queue depth is a count over the outbox: measured here at
            // most once a second, never on a request's path.
            if depth_measured.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                depth_measured = Some(Instant::now());
                if let Ok(depth) = worker.gateway.store().queue_depth().await {
                    worker.gateway.metrics().set_queue_depth(depth);
                }
            }
            // A claimed message's lease runs from its claim: claim no more
            // than may be attempted now, so that no message outlives its lease
            // (and is sent again by another replica) waiting for slow commits.
            let Ok(first) = Arc::clone(&in_flight).acquire_owned().await else {
                break;
            };
            let room = u32::try_from(1 + in_flight.available_permits())
                .unwrap_or(u32::MAX)
                .min(settings.batch);
            match worker.claim(Utc::now(), room).await {
                Ok(messages) => {
                    let claimed = messages.len();
                    let mut first = Some(first);
                    for message in messages {
                        // A claimed message waits here for its permits, not
                        // in a task of its own: the tasks stay bounded.
                        let recording = match first.take() {
                            Some(permit) => permit,
                            None => match Arc::clone(&in_flight).acquire_owned().await {
                                Ok(permit) => permit,
                                Err(_) => break,
                            },
                        };
                        let Ok(sending) = Arc::clone(&sending).acquire_owned().await else {
                            break;
                        };
                        let worker = Arc::clone(&worker);
                        tokio::spawn(async move {
                            worker.deliver(message, sending).await;
                            drop(recording);
                        });
                    }
                    // A destination got its whole share: more may be due.
                    let share = claim_share(room, worker.senders.len());
                    if claimed as u32 >= share {
                        continue;
                    }
                }
                Err(error) => tracing::error!(error = %error, "the outbox could not be read"),
            }
            tokio::select! {
                () = worker.wake.notified() => {}
                () = tokio::time::sleep(settings.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Attempts in flight finish; their outcomes are recorded.
        let _ = in_flight
            .acquire_many(u32::try_from(in_flight_limit).unwrap_or(u32::MAX))
            .await;
    }

    /// Claims up to `limit` due messages for the push destinations not disabled.
    async fn claim(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<OutboxMessage>, Error> {
        let longest = self
            .gateway
            .config()
            .organisations
            .iter()
            .map(|organisation| organisation.delivery.timeout)
            .max()
            .unwrap_or(Duration::from_secs(10));
        // The lease outlives the attempt's timeout: a message is never sent
        // twice at once, and a crashed attempt is retried once it ends.
        let lease = chrono::Duration::from_std(longest * 2 + Duration::from_secs(5))
            .unwrap_or(chrono::Duration::minutes(1));
        self.gateway
            .store()
            .claim_due(
                self.senders.keys().cloned().collect(),
                now,
                now + lease,
                limit,
            )
            .await
    }

    async fn deliver(&self, message: OutboxMessage, sending: OwnedSemaphorePermit) {
        let span = tracing::info_span!(
            "deliver",
            message_id = %message.message_id,
            kind = %message.kind,
            destination = %message.destination,
            attempt = message.attempts
        );
        if let Err(error) = self
            .attempt(&message, sending)
            .instrument(span.clone())
            .await
        {
            span.in_scope(
                || tracing::error!(error = %error, "a delivery attempt could not be recorded"),
            );
        }
    }

    /// Sends `message` under the `sending` permit, given back as soon as the
    /// destination has answered, then records the outcome.
    async fn attempt(
        &self,
        message: &OutboxMessage,
        sending: OwnedSemaphorePermit,
    ) -> Result<(), Error> {
        let config = self.gateway.config();
        let store = self.gateway.store();
        let metrics = self.gateway.metrics();
        let now = Utc::now();
        let Some(destination) = config.organisations.by_id(&message.destination) else {
            let outcome = Outcome::Dead {
                error: "destination-removed".to_owned(),
            };
            let audit = entry(AuditKind::DeadLettered, message).reason("destination-removed");
            store
                .complete(message.message_id.clone(), outcome, now, audit)
                .await?;
            return Ok(());
        };
        if message.kind == MessageKind::Referral.as_str()
            && let Err(reason) = may_leave(&self.gateway, message, now).await?
        {
            return cancel(&self.gateway, message, reason, now).await;
        }
        let outbound = match encode_for(destination, message) {
            Ok(outbound) => outbound,
            Err(error) => {
                tracing::error!(error = %error, "a queued message cannot be written in its destination's format");
                let audit = entry(AuditKind::DeadLettered, message).reason("encoding-failed");
                store
                    .complete(
                        message.message_id.clone(),
                        Outcome::Dead {
                            error: "encoding-failed".to_owned(),
                        },
                        now,
                        audit,
                    )
                    .await?;
                return Ok(());
            }
        };
        let Some(sender) = self.senders.get(&message.destination) else {
            return Ok(());
        };
        let started = Instant::now();
        let attempt = match sender.as_ref() {
            Sender::Webhook(sender) => sender.send(&outbound, now).await,
            Sender::Grpc(sender) => sender.send(&outbound).await,
        };
        let latency = started.elapsed();
        drop(sending);
        let now = Utc::now();
        let delivery = &destination.delivery;
        let age = now
            .signed_duration_since(
                DateTime::parse_from_rfc3339(&message.created_at)
                    .map(|at| at.with_timezone(&Utc))
                    .unwrap_or(now),
            )
            .to_std()
            .unwrap_or_default();
        let (outcome, audit, label) = match attempt {
            Attempt::Delivered => (
                Outcome::Delivered,
                entry(AuditKind::Delivered, message),
                "delivered",
            ),
            Attempt::Retry(error)
                if message.attempts < delivery.max_attempts && age < delivery.max_age =>
            {
                let delay = backoff(
                    message.attempts,
                    config.delivery.base_delay,
                    config.delivery.max_delay,
                );
                let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                tracing::info!(error = %error, retry_in_ms = delay.as_millis() as u64, "delivery failed; will retry");
                (
                    Outcome::Retry {
                        at,
                        error: error.clone(),
                    },
                    entry(AuditKind::DeliveryFailed, message).reason(&error),
                    "retry",
                )
            }
            Attempt::Retry(error) | Attempt::Refused(error) => {
                tracing::warn!(error = %error, "delivery dead-lettered");
                (
                    Outcome::Dead {
                        error: error.clone(),
                    },
                    entry(AuditKind::DeadLettered, message).reason(&error),
                    "dead",
                )
            }
            Attempt::Gone(error) => {
                tracing::warn!(error = %error, "the destination is gone: disabled until an operator enables it");
                let disabled = AuditEntry::new(AuditKind::DeliveryFailed)
                    .actor(ACTOR)
                    .recipient(&message.destination)
                    .reason("destination-disabled");
                store
                    .disable_destination(message.destination.clone(), error.clone(), now, disabled)
                    .await?;
                (
                    Outcome::Dead {
                        error: error.clone(),
                    },
                    entry(AuditKind::DeadLettered, message).reason(&error),
                    "gone",
                )
            }
        };
        metrics.delivery_attempt(label, latency);
        store
            .complete(message.message_id.clone(), outcome, now, audit)
            .await?;

        Ok(())
    }
}

/// Cancels a message that may no longer leave (consent withdrawn, referral
/// withdrawn by its sender): never sent, audited with the reason.
pub async fn cancel(
    gateway: &Gateway,
    message: &OutboxMessage,
    reason: &'static str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    tracing::info!(reason, "delivery cancelled");
    let audit = entry(AuditKind::DeliveryFailed, message).reason(reason);
    gateway
        .store()
        .complete(
            message.message_id.clone(),
            Outcome::Cancelled {
                reason: reason.to_owned(),
            },
            now,
            audit,
        )
        .await?;
    gateway
        .metrics()
        .delivery_attempt("cancelled", Duration::ZERO);
    Ok(())
}

/// The audit entry of an attempt on a message.
fn entry(kind: AuditKind, message: &OutboxMessage) -> AuditEntry {
    AuditEntry::new(kind)
        .actor(ACTOR)
        .referral(&message.referral_id)
        .event(&message.message_id)
        .recipient(&message.destination)
        .attempt(message.attempts)
}

/// The delay before attempt `attempts + 1`: uniformly random between zero and
/// `base × 2^(attempts − 1)`, capped at `max` ("full jitter").
pub fn backoff(attempts: u32, base: Duration, max: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1 << exponent).min(max);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// Whether a referral may still leave: not withdrawn by its sender nor
/// expired, and its consent record still in force. `Ok(Err(reason))` names
/// why not.
pub async fn may_leave(
    gateway: &Gateway,
    message: &OutboxMessage,
    now: DateTime<Utc>,
) -> Result<Result<(), &'static str>, Error> {
    // Its consent record and statuses, not its content: this runs before
    // every attempt, and reads them together.
    let standing = gateway
        .store()
        .standing(
            message.referral_id.clone(),
            message.consent_record_id.clone(),
        )
        .await?;
    let Some(standing) = standing else {
        return Ok(Err("referral-missing"));
    };
    // No record id, an id that is not one, or no such record stored.
    let Some(record) = standing.consent_record else {
        return Ok(Err("consent-missing"));
    };
    // Consent first: it is the more precise reason when both apply (a
    // withdrawal of consent also records a withdrawn status).
    let consent = match record.state_at(now) {
        ConsentState::Active => Ok(()),
        ConsentState::Withdrawn => Err("consent-withdrawn"),
        ConsentState::Objected => Err("objection-recorded"),
        ConsentState::Expired => Err("consent-expired"),
        ConsentState::Refused => Err("consent-refused"),
        ConsentState::Invalidated => Err("consent-invalidated"),
        ConsentState::NotYetValid => Err("consent-not-yet-valid"),
        ConsentState::NeverGiven => Err("consent-missing"),
    };
    if consent.is_err() {
        return Ok(consent);
    }
    for status in &standing.statuses {
        match status.as_str() {
            "STATUS_WITHDRAWN" => return Ok(Err("referral-withdrawn")),
            "STATUS_EXPIRED" => return Ok(Err("referral-expired")),
            _ => {}
        }
    }
    Ok(Ok(()))
}

/// The message in its destination's format. Status events go to a
/// France Travail destination as canonical JSON: its format carries referrals
/// and reads decisions, it has no status event to write.
pub fn encode_for(destination: &Organisation, message: &OutboxMessage) -> Result<Outbound, Error> {
    let unreadable =
        |_| Error::Internal("store: a queued message no longer reads as its kind".to_owned());
    let (kind, decoded) = match message.kind.as_str() {
        "referral" => (
            MessageKind::Referral,
            Message::Referral(Box::new(
                serde_json::from_str::<v2::Referral>(&message.payload).map_err(unreadable)?,
            )),
        ),
        "status_event" => (
            MessageKind::StatusEvent,
            Message::Status(Box::new(
                serde_json::from_str::<StatusEvent>(&message.payload).map_err(unreadable)?,
            )),
        ),
        other => {
            return Err(Error::Internal(format!(
                "store: an outbox message of unknown kind {other}"
            )));
        }
    };
    let format = match (kind, destination.delivery.format.as_str()) {
        (MessageKind::StatusEvent, "france-travail") => "passerelle-v2",
        (_, format) => format,
    };
    let adapter = formats::by_name(format, &FormatOptions::default())?;
    let mut context = Context::now();
    context.recipient = Some(destination.party.clone());
    let encoded = adapter.encode(&decoded, &context)?;
    Ok(Outbound {
        message_id: message.message_id.clone(),
        kind,
        referral_id: message.referral_id.clone(),
        format: format.to_owned(),
        content_type: "application/json",
        body: encoded.value,
        attempt: message.attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_its_ceiling_and_stays_under_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempts in 1_u32..40 {
            let ceiling = (base * 2_u32.pow(attempts.saturating_sub(1).min(20))).min(max);
            for _ in 0..50 {
                assert!(backoff(attempts, base, max) <= ceiling);
            }
        }
        // Full jitter: the delays spread over the whole range.
        let delays: Vec<Duration> = (0..200).map(|_| backoff(5, base, max)).collect();
        assert!(
            delays
                .iter()
                .any(|delay| *delay < Duration::from_millis(400))
        );
        assert!(
            delays
                .iter()
                .any(|delay| *delay > Duration::from_millis(1200))
        );
    }
}
