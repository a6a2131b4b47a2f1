//! Pull delivery, for organisations that cannot expose an endpoint: they
//! lease messages from their inbox (`GET /v1/inbox?after=CURSOR&limit=N`) and
//! acknowledge each (`POST /v1/inbox/{delivery_id}/ack`). A message not
//! acknowledged before its lease ends is offered again, under the same
//! delivery id.

use chrono::Utc;
use serde::Serialize;

use super::worker::{cancel, encode_for, may_leave};
use crate::audit::{AuditEntry, AuditKind};
use crate::config::Organisation;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::store::ReferralStore;

/// The most messages one pull returns.
pub const MAX_LIMIT: u32 = 100;

/// One message of an inbox.
#[derive(Debug, Clone, Serialize)]
pub struct InboxItem {
    /// The id to acknowledge; stable across offers (the message id).
    pub delivery_id: String,
    /// Where the inbox stands after this item (pass it as `after`).
    pub cursor: i64,
    /// `referral` or `status_event`.
    pub kind: &'static str,
    /// The referral it belongs to.
    pub referral_id: String,
    /// The format of `message`.
    pub format: String,
    /// The times this message was offered, this one included.
    pub attempt: u32,
    /// When the lease ends: acknowledge before, or it is offered again.
    pub lease_until: String,
    /// The message, in the organisation's format.
    pub message: serde_json::Value,
}

/// A page of an inbox.
#[derive(Debug, Clone, Serialize)]
pub struct InboxPage {
    /// The messages leased to the caller.
    pub items: Vec<InboxItem>,
    /// The cursor to pass as `after` next time.
    pub cursor: i64,
}

/// Leases up to `limit` messages of the caller's inbox after `after`.
/// Messages whose consent is no longer in force are cancelled, not offered.
pub async fn pull(
    gateway: &Gateway,
    caller: &Organisation,
    after: i64,
    limit: u32,
) -> Result<InboxPage, Error> {
    if !matches!(caller.delivery.mode, crate::config::DeliveryMode::Pull) {
        return Err(Error::Forbidden(
            "this organisation's messages are pushed to it; its inbox is not for pulling"
                .to_owned(),
        ));
    }
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::invalid(
            "",
            "limit",
            format!("limit is between 1 and {MAX_LIMIT}"),
        ));
    }
    let now = Utc::now();
    let lease = chrono::Duration::from_std(gateway.config().delivery.lease)
        .unwrap_or(chrono::Duration::minutes(1));
    let leased = gateway
        .store()
        .lease_inbox(caller.id.clone(), after, limit, now, now + lease)
        .await?;
    let mut items = Vec::with_capacity(leased.len());
    let mut cursor = after;
    for message in leased {
        cursor = cursor.max(message.seq);
        if message.kind == "referral"
            && let Err(reason) = may_leave(gateway, &message, now).await?
        {
            cancel(gateway, &message, reason, now).await?;
            continue;
        }
        let outbound = encode_for(caller, &message)?;
        let document = serde_json::from_slice(&outbound.body).map_err(|_| {
            Error::Internal("an inbox message is not JSON in its format".to_owned())
        })?;
        let audit = AuditEntry::new(AuditKind::DeliveryAttempted)
            .actor(&caller.id)
            .referral(&message.referral_id)
            .event(&message.message_id)
            .attempt(message.attempts);
        gateway.store().audit(audit).await?;
        items.push(InboxItem {
            delivery_id: message.message_id,
            cursor: message.seq,
            kind: outbound.kind.as_str(),
            referral_id: message.referral_id,
            format: outbound.format,
            attempt: message.attempts,
            lease_until: message.lease_until.unwrap_or_default(),
            message: document,
        });
    }
    gateway
        .metrics()
        .delivery_attempt("pulled", std::time::Duration::ZERO);
    Ok(InboxPage { items, cursor })
}

/// Acknowledges a message of the caller's inbox: delivered. Another
/// organisation's delivery id is [`Error::NotFound`].
pub async fn acknowledge(
    gateway: &Gateway,
    caller: &Organisation,
    delivery_id: &str,
) -> Result<(), Error> {
    if uuid::Uuid::parse_str(delivery_id).is_err() {
        return Err(Error::NotFound(format!("delivery {delivery_id}")));
    }
    let audit = AuditEntry::new(AuditKind::Delivered)
        .actor(&caller.id)
        .event(delivery_id)
        .recipient(&caller.id);
    gateway
        .store()
        .acknowledge(caller.id.clone(), delivery_id.to_owned(), Utc::now(), audit)
        .await
}
