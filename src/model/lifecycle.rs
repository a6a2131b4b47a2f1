//! The lifecycle of a referral: one state machine that every status event is
//! checked against before it is stored. Pure; no I/O.
//!
//! The state is the last status recorded (none right after the gateway
//! accepted the referral). A status may follow the current one only if this
//! table says so:
//!
//! | current              | may be followed by                                                  |
//! |----------------------|---------------------------------------------------------------------|
//! | (none)               | Sent, Received, Accepted, Rejected, Withdrawn, Expired              |
//! | Sent                 | Received, Accepted, Rejected, Withdrawn, Expired                    |
//! | Received             | Accepted, Rejected, Withdrawn, Expired                              |
//! | Accepted             | AppointmentScheduled, InProgress, Completed, Withdrawn              |
//! | AppointmentScheduled | AppointmentScheduled, AppointmentHeld, AppointmentMissed, Withdrawn |
//! | AppointmentHeld      | AppointmentScheduled, InProgress, Completed, Withdrawn              |
//! | AppointmentMissed    | AppointmentScheduled, Completed, Withdrawn                          |
//! | InProgress           | AppointmentScheduled, Completed, Withdrawn                          |
//! | Rejected             |                                                                     |
//! | Completed            |                                                                     |
//! | Withdrawn            |                                                                     |
//! | Expired              |                                                                     |
//!
//! and only its author may post it:
//!
//! | status               | posted by       |
//! |----------------------|-----------------|
//! | Sent                 | Gateway         |
//! | Received             | Recipient       |
//! | Accepted             | Recipient       |
//! | Rejected             | Recipient       |
//! | AppointmentScheduled | Recipient       |
//! | AppointmentHeld      | Recipient       |
//! | AppointmentMissed    | Recipient       |
//! | InProgress           | Recipient       |
//! | Completed            | Recipient       |
//! | Withdrawn            | Sender, Gateway |
//! | Expired              | Gateway         |
//!
//! Why it is shaped so, from what operators do:
//! - Received is optional: many operators answer with their decision
//!   straight away. Sent is reserved to the gateway and comes first or not at
//!   all, since any status from the recipient already proves that the
//!   referral arrived. (The gateway does not record it today: a referral's
//!   delivery shows in its `state`, `delivered`, rather than as an event.)
//! - Accepted or Rejected decide. An intake interview held before the decision
//!   is reported as Received, then the decision (DORA's "bénéficiaire absent"
//!   is a rejection reason for exactly that case).
//! - After acceptance, appointments may be rescheduled (Scheduled twice in a
//!   row is the only repetition allowed), missed then rescheduled, or held;
//!   the accompaniment goes on (InProgress) after acceptance or a held
//!   appointment. Completed, with its outcome, ends it; from Accepted when the
//!   person found a job before starting, from AppointmentMissed when the
//!   person never came back (outcome "other").
//! - Rejected, Completed, Withdrawn and Expired are final.
//! - The sender may only withdraw its referral; the gateway withdraws it too
//!   when the person withdraws consent or objects.
//! - Expired is the gateway's, while nobody has decided (none, Sent,
//!   Received): once the recipient took the person on, a long accompaniment
//!   without news is not a referral left unanswered.
//!
//! Which fields a status carries (a rejection reason, an outcome) is the
//! status/v1 schema's business, checked when the event is decoded.

use std::fmt;

use crate::error::{Error, Violation};

use super::status::Status;

/// Who posts a status event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Author {
    /// The organisation that sent the referral.
    Sender,
    /// The organisation the referral is addressed to.
    Recipient,
    /// Passerelle itself (delivery, expiry, consent withdrawn).
    Gateway,
}

impl Author {
    /// Every author.
    pub const ALL: &'static [Self] = &[Self::Sender, Self::Recipient, Self::Gateway];

    /// How error messages name the author.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sender => "the sender",
            Self::Recipient => "the recipient",
            Self::Gateway => "the gateway",
        }
    }
}

impl fmt::Display for Author {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The current status: the last one recorded, `None` before any.
pub fn current(history: &[Status]) -> Option<Status> {
    history.last().copied()
}

/// Whether nothing may follow `status`.
pub fn is_terminal(status: Status) -> bool {
    allowed_next(Some(status)).is_empty()
}

/// The statuses that may follow `current` (`None`: no status yet), whoever posts them.
pub fn allowed_next(current: Option<Status>) -> &'static [Status] {
    use Status::{
        Accepted, AppointmentHeld, AppointmentMissed, AppointmentScheduled, Completed, Expired,
        InProgress, Received, Rejected, Sent, Withdrawn,
    };
    match current {
        None => &[Sent, Received, Accepted, Rejected, Withdrawn, Expired],
        Some(Sent) => &[Received, Accepted, Rejected, Withdrawn, Expired],
        Some(Received) => &[Accepted, Rejected, Withdrawn, Expired],
        Some(Accepted) => &[AppointmentScheduled, InProgress, Completed, Withdrawn],
        Some(AppointmentScheduled) => &[
            AppointmentScheduled,
            AppointmentHeld,
            AppointmentMissed,
            Withdrawn,
        ],
        Some(AppointmentHeld) => &[AppointmentScheduled, InProgress, Completed, Withdrawn],
        Some(AppointmentMissed) | Some(InProgress) => &[AppointmentScheduled, Completed, Withdrawn],
        Some(Rejected) | Some(Completed) | Some(Withdrawn) | Some(Expired) => &[],
    }
}

/// Who may post `status`.
pub fn authors(status: Status) -> &'static [Author] {
    match status {
        Status::Sent | Status::Expired => &[Author::Gateway],
        Status::Withdrawn => &[Author::Sender, Author::Gateway],
        Status::Received
        | Status::Accepted
        | Status::Rejected
        | Status::AppointmentScheduled
        | Status::AppointmentHeld
        | Status::AppointmentMissed
        | Status::InProgress
        | Status::Completed => &[Author::Recipient],
    }
}

/// Checks that `author` may post `next` after `history` (oldest first).
///
/// A status `author` never posts is [`Error::Forbidden`]; a status that may
/// not follow the current one is [`Error::Invalid`] with one violation at
/// `/status`, rule `illegal-transition`, naming the current status and what
/// `author` may post instead. Statuses are codes: the messages hold nothing
/// about the person.
pub fn check_transition(history: &[Status], next: Status, author: Author) -> Result<(), Error> {
    let posters = authors(next);
    if !posters.contains(&author) {
        return Err(Error::Forbidden(format!(
            "{} is posted by {}, not by {author}",
            next.wire_name(),
            join(posters.iter().map(|poster| poster.as_str()), " or "),
        )));
    }
    let current = current(history);
    let allowed = allowed_next(current);
    if allowed.contains(&next) {
        return Ok(());
    }
    let detail = match current {
        Some(status) if allowed.is_empty() => format!(
            "{} may not follow {}: {} is final, no status follows it",
            next.wire_name(),
            status.wire_name(),
            status.wire_name()
        ),
        _ => {
            let now = current.map_or("no status yet", Status::wire_name);
            let yours: Vec<&str> = allowed
                .iter()
                .filter(|status| authors(**status).contains(&author))
                .map(|status| status.wire_name())
                .collect();
            let choices = if yours.is_empty() {
                format!("{author} may post no status now")
            } else {
                format!("{author} may post {} next", join(yours, ", "))
            };
            format!(
                "{} may not follow {now}; {choices} (the referral's lifecycle allows {} after it)",
                next.wire_name(),
                join(allowed.iter().map(|status| status.wire_name()), ", ")
            )
        }
    };
    Err(Error::Invalid(vec![Violation::new(
        "/status",
        "illegal-transition",
        detail,
    )]))
}

fn join<'a>(items: impl IntoIterator<Item = &'a str>, separator: &str) -> String {
    items.into_iter().collect::<Vec<_>>().join(separator)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// The module documentation, whose two tables the tests hold the code to.
    const DOCUMENTATION: &str = include_str!("lifecycle.rs");

    fn status_named(name: &str) -> Status {
        Status::ALL
            .iter()
            .copied()
            .find(|status| format!("{status:?}") == name)
            .unwrap_or_else(|| panic!("the table names an unknown status {name}"))
    }

    fn author_named(name: &str) -> Author {
        Author::ALL
            .iter()
            .copied()
            .find(|author| format!("{author:?}") == name)
            .unwrap_or_else(|| panic!("the table names an unknown author {name}"))
    }

    /// The rows of the documented table whose header starts with `first_column`.
    fn table(first_column: &str) -> Vec<(String, Vec<String>)> {
        let mut rows = Vec::new();
        let mut inside = false;
        for line in DOCUMENTATION.lines() {
            let Some(row) = line.strip_prefix("//! |") else {
                inside = false;
                continue;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            if cells[0] == first_column {
                inside = true;
                continue;
            }
            if !inside || cells[0].starts_with('-') {
                continue;
            }
            let listed = cells[1]
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect();
            rows.push((cells[0].to_owned(), listed));
        }
        assert!(!rows.is_empty(), "no table headed {first_column}");
        rows
    }

    fn documented_transitions() -> Vec<(Option<Status>, BTreeSet<Status>)> {
        table("current")
            .into_iter()
            .map(|(from, next)| {
                let from = (from != "(none)").then(|| status_named(&from));
                (from, next.iter().map(|name| status_named(name)).collect())
            })
            .collect()
    }

    fn documented_authors() -> Vec<(Status, Vec<Author>)> {
        table("status")
            .into_iter()
            .map(|(status, authors)| {
                let authors = authors.iter().map(|name| author_named(name)).collect();
                (status_named(&status), authors)
            })
            .collect()
    }

    /// A history ending in `current`, each step checked on the way.
    fn history_to(current: Option<Status>) -> Vec<Status> {
        use Status::{
            Accepted, AppointmentHeld, AppointmentMissed, AppointmentScheduled, Completed,
            InProgress,
        };
        let steps = match current {
            None => Vec::new(),
            Some(AppointmentScheduled) => vec![Accepted, AppointmentScheduled],
            Some(status @ (AppointmentHeld | AppointmentMissed)) => {
                vec![Accepted, AppointmentScheduled, status]
            }
            Some(status @ (InProgress | Completed)) => vec![Accepted, status],
            Some(status) => vec![status],
        };
        let mut history = Vec::new();
        for step in steps {
            let author = authors(step)[0];
            check_transition(&history, step, author)
                .unwrap_or_else(|error| panic!("{step:?} after {history:?}: {error}"));
            history.push(step);
        }
        history
    }

    #[test]
    fn every_pair_of_statuses_follows_the_documented_table() {
        let transitions = documented_transitions();
        let froms: BTreeSet<Option<Status>> = transitions.iter().map(|(from, _)| *from).collect();
        assert_eq!(
            froms.len(),
            Status::ALL.len() + 1,
            "one row per status, and one for none"
        );
        let authors = documented_authors();
        assert_eq!(authors.len(), Status::ALL.len(), "one row per status");
        for (from, allowed) in &transitions {
            let history = history_to(*from);
            assert_eq!(current(&history), *from);
            for next in Status::ALL.iter().copied() {
                let (_, posters) = authors
                    .iter()
                    .find(|(status, _)| *status == next)
                    .expect("every status has its authors");
                for author in Author::ALL.iter().copied() {
                    let result = check_transition(&history, next, author);
                    let may_post = posters.contains(&author);
                    match (may_post, allowed.contains(&next), result) {
                        (true, true, Ok(())) => {}
                        (false, _, Err(Error::Forbidden(message))) => {
                            assert!(message.contains(next.wire_name()), "{message}");
                        }
                        (true, false, Err(Error::Invalid(violations))) => {
                            assert_eq!(violations.len(), 1);
                            assert_eq!(violations[0].pointer, "/status");
                            assert_eq!(violations[0].rule, "illegal-transition");
                            let detail = &violations[0].detail;
                            let named = from.map_or("no status yet", Status::wire_name);
                            assert!(detail.contains(named), "{detail}");
                        }
                        (may_post, allowed, result) => panic!(
                            "{from:?} → {next:?} by {author:?}: documented (author {may_post}, transition {allowed}), got {result:?}"
                        ),
                    }
                }
            }
        }
        for (status, posters) in &authors {
            assert_eq!(super::authors(*status), posters, "authors of {status:?}");
        }
    }

    #[test]
    fn the_final_statuses_are_exactly_rejected_completed_withdrawn_and_expired() {
        let terminal: Vec<Status> = Status::ALL
            .iter()
            .copied()
            .filter(|status| is_terminal(*status))
            .collect();
        assert_eq!(
            terminal,
            [
                Status::Rejected,
                Status::Completed,
                Status::Withdrawn,
                Status::Expired
            ]
        );
    }

    #[test]
    fn an_illegal_transition_names_the_current_status_and_what_the_author_may_post() {
        let history = [Status::Received];
        let error = check_transition(&history, Status::InProgress, Author::Recipient)
            .expect_err("in progress needs a decision first");
        let Error::Invalid(violations) = error else {
            panic!("not a validation error: {error:?}");
        };
        assert_eq!(
            violations[0].detail,
            "STATUS_IN_PROGRESS may not follow STATUS_RECEIVED; the recipient may post \
             STATUS_ACCEPTED, STATUS_REJECTED next (the referral's lifecycle allows \
             STATUS_ACCEPTED, STATUS_REJECTED, STATUS_WITHDRAWN, STATUS_EXPIRED after it)"
        );
        let error = check_transition(
            &[Status::Accepted, Status::Completed],
            Status::Withdrawn,
            Author::Sender,
        )
        .expect_err("completed is final");
        assert!(
            error.to_string().contains("STATUS_COMPLETED is final"),
            "{error}"
        );
    }

    #[test]
    fn a_repeated_status_is_refused_except_a_rescheduled_appointment() {
        for status in Status::ALL.iter().copied() {
            let history = history_to(Some(status));
            let Some(author) = authors(status).first().copied() else {
                continue;
            };
            let repeated = check_transition(&history, status, author).is_ok();
            assert_eq!(
                repeated,
                status == Status::AppointmentScheduled,
                "{status:?} twice in a row"
            );
        }
    }

    #[test]
    fn a_typical_path_is_accepted_step_by_step() {
        use Status::{
            Accepted, AppointmentHeld, AppointmentMissed, AppointmentScheduled, Completed,
            InProgress, Received, Sent,
        };
        let path = [
            (Sent, Author::Gateway),
            (Received, Author::Recipient),
            (Accepted, Author::Recipient),
            (AppointmentScheduled, Author::Recipient),
            (AppointmentMissed, Author::Recipient),
            (AppointmentScheduled, Author::Recipient),
            (AppointmentScheduled, Author::Recipient),
            (AppointmentHeld, Author::Recipient),
            (InProgress, Author::Recipient),
            (Completed, Author::Recipient),
        ];
        let mut history = Vec::new();
        for (status, author) in path {
            check_transition(&history, status, author)
                .unwrap_or_else(|error| panic!("{status:?} after {history:?}: {error}"));
            history.push(status);
        }
        assert!(is_terminal(current(&history).expect("a status")));
    }

    fn any_status() -> impl Strategy<Value = Status> {
        proptest::sample::select(Status::ALL.to_vec())
    }

    fn any_author() -> impl Strategy<Value = Author> {
        proptest::sample::select(Author::ALL.to_vec())
    }

    proptest! {
        /// Whatever is posted, in whatever order, by whoever: the events the
        /// machine lets through never leave a final status and never hold a
        /// Sent or Expired that the gateway did not post.
        #[test]
        fn accepted_sequences_never_leave_a_final_status(
            attempts in proptest::collection::vec((any_status(), any_author()), 0..40)
        ) {
            let mut history: Vec<Status> = Vec::new();
            let mut posted: Vec<(Status, Author)> = Vec::new();
            for (status, author) in attempts {
                let before_final = current(&history).is_some_and(is_terminal);
                if check_transition(&history, status, author).is_ok() {
                    prop_assert!(!before_final, "{status:?} accepted after {history:?}");
                    history.push(status);
                    posted.push((status, author));
                }
            }
            for (index, (status, author)) in posted.iter().enumerate() {
                if matches!(status, Status::Sent | Status::Expired) {
                    prop_assert_eq!(*author, Author::Gateway);
                }
                if is_terminal(*status) {
                    prop_assert_eq!(index, posted.len() - 1, "a final status is last");
                }
                if *author == Author::Sender {
                    prop_assert_eq!(*status, Status::Withdrawn);
                }
            }
            prop_assert!(
                posted.iter().filter(|(status, _)| *status == Status::Sent).count() <= 1
            );
        }
    }
}
