//! The state of a consent record at a given time, derived from its events
//! (never stored). The rules, and the edge cases they settle, are listed in
//! `docs/consent.md`:
//!
//! - only events dated at or before `now` count (history replays: the state
//!   at an earlier time is the state the record had then);
//! - events are read in order and the last decisive one wins;
//! - `invalidated` is final: nothing after it revives the record;
//! - `given` activates, including after a refusal, withdrawal, objection or
//!   expiry: it is a new, explicit expression of the person's will;
//! - `renewed` confirms a consent that is active or expired, and changes
//!   nothing otherwise: a renewal cannot lift a refusal, a withdrawal or an
//!   objection, nor stand for a first consent;
//! - an active record is `not_yet_valid` before `valid_from` and `expired` from
//!   `valid_until` on (the end is exclusive);
//! - the event kinds block whatever the legal basis: an objection recorded on
//!   a consent record blocks, as a withdrawal recorded on a public-task record
//!   does; the state says which was recorded.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::record::{ConsentEventKind, ConsentRecord};

/// What a consent record allows at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// Given or renewed, within the validity period: data may leave.
    Active,
    /// Given, but the validity period has not started.
    NotYetValid,
    /// The validity period is over, or an `expired` event was recorded.
    Expired,
    /// The person refused.
    Refused,
    /// The person withdrew consent.
    Withdrawn,
    /// The person objected (Art. 21).
    Objected,
    /// The record was found invalid; final.
    Invalidated,
    /// No effective `given` event (none yet, or only a renewal of nothing).
    NeverGiven,
}

impl ConsentState {
    /// The snake_case name, as in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NotYetValid => "not_yet_valid",
            Self::Expired => "expired",
            Self::Refused => "refused",
            Self::Withdrawn => "withdrawn",
            Self::Objected => "objected",
            Self::Invalidated => "invalidated",
            Self::NeverGiven => "never_given",
        }
    }
}

impl fmt::Display for ConsentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ConsentRecord {
    /// The state of the record at `now`, derived from its events and validity period.
    pub fn state_at(&self, now: DateTime<Utc>) -> ConsentState {
        let mut state = ConsentState::NeverGiven;
        for event in self.events.iter().filter(|event| event.at <= now) {
            state = match (event.kind, state) {
                (_, ConsentState::Invalidated) | (ConsentEventKind::Invalidated, _) => {
                    ConsentState::Invalidated
                }
                (ConsentEventKind::Given, _) => ConsentState::Active,
                (ConsentEventKind::Renewed, ConsentState::Active | ConsentState::Expired) => {
                    ConsentState::Active
                }
                (ConsentEventKind::Renewed, unchanged) => unchanged,
                (ConsentEventKind::Refused, _) => ConsentState::Refused,
                (ConsentEventKind::Withdrawn, _) => ConsentState::Withdrawn,
                (ConsentEventKind::Objected, _) => ConsentState::Objected,
                (ConsentEventKind::Expired, _) => ConsentState::Expired,
            };
        }
        if state != ConsentState::Active {
            return state;
        }
        if self.valid_from.is_some_and(|from| now < from) {
            ConsentState::NotYetValid
        } else if self.valid_until.is_some_and(|until| now >= until) {
            ConsentState::Expired
        } else {
            ConsentState::Active
        }
    }
}
