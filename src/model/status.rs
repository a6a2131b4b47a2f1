//! Status events (`passerelle.status.v1`): what became of a referral.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::common::{schema_tag, wire_enum};
use super::ids::{ReferralId, Siret};

schema_tag!(
    /// The `schema_version` of a status event.
    StatusV1Tag = "passerelle.status.v1"
);

wire_enum! {
    /// The lifecycle of a referral.
    Status {
        /// Sent by the gateway.
        Sent = 1 => "STATUS_SENT",
        /// Received by the recipient.
        Received = 2 => "STATUS_RECEIVED",
        /// Accepted by the recipient.
        Accepted = 3 => "STATUS_ACCEPTED",
        /// Rejected by the recipient, with a reason.
        Rejected = 4 => "STATUS_REJECTED",
        /// An appointment is scheduled.
        AppointmentScheduled = 5 => "STATUS_APPOINTMENT_SCHEDULED",
        /// The appointment took place.
        AppointmentHeld = 6 => "STATUS_APPOINTMENT_HELD",
        /// The person did not come to the appointment.
        AppointmentMissed = 7 => "STATUS_APPOINTMENT_MISSED",
        /// The accompaniment is in progress.
        InProgress = 8 => "STATUS_IN_PROGRESS",
        /// The accompaniment ended, with an outcome.
        Completed = 9 => "STATUS_COMPLETED",
        /// The sender withdrew the referral, or the person withdrew consent.
        Withdrawn = 10 => "STATUS_WITHDRAWN",
        /// Nobody acted on the referral in time.
        Expired = 11 => "STATUS_EXPIRED",
    }
}

wire_enum! {
    /// Why a referral was rejected (DORA's list, plus France Travail's motif_refus).
    RejectionReason {
        /// bénéficiaire-non-joignable.
        Unreachable = 1 => "REJECTION_REASON_UNREACHABLE",
        /// bénéficiaire-absent.
        Absent = 2 => "REJECTION_REASON_ABSENT",
        /// bénéficiaire-en-emploi.
        InEmployment = 3 => "REJECTION_REASON_IN_EMPLOYMENT",
        /// bénéficiaire-en-formation.
        InTraining = 4 => "REJECTION_REASON_IN_TRAINING",
        /// bénéficiaire-non-éligible.
        NotEligible = 5 => "REJECTION_REASON_NOT_ELIGIBLE",
        /// bénéficiaire-non-mobile.
        NotMobile = 6 => "REJECTION_REASON_NOT_MOBILE",
        /// bénéficiaire-non-intéressé.
        NotInterested = 7 => "REJECTION_REASON_NOT_INTERESTED",
        /// freins-périphériques.
        PeripheralObstacles = 8 => "REJECTION_REASON_PERIPHERAL_OBSTACLES",
        /// session-complète.
        SessionFull = 9 => "REJECTION_REASON_SESSION_FULL",
        /// orientation-en-doublon.
        Duplicate = 10 => "REJECTION_REASON_DUPLICATE",
        /// France Travail APPRECIATION_DIFFERENTE.
        DifferentAssessment = 11 => "REJECTION_REASON_DIFFERENT_ASSESSMENT",
        /// France Travail DECLARATION_INEXACTE.
        InaccurateDeclaration = 12 => "REJECTION_REASON_INACCURATE_DECLARATION",
        /// autre.
        Other = 13 => "REJECTION_REASON_OTHER",
    }
}

wire_enum! {
    /// What an accompaniment led to.
    Outcome {
        /// A job.
        Employment = 1 => "OUTCOME_EMPLOYMENT",
        /// A training course.
        Training = 2 => "OUTCOME_TRAINING",
        /// A professional immersion (PMSMP).
        Immersion = 3 => "OUTCOME_IMMERSION",
        /// Anything else.
        Other = 4 => "OUTCOME_OTHER",
    }
}

/// One step in the life of a referral, posted by the organisation that took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusEvent {
    /// UUID chosen by the author; the idempotency key of the event.
    pub event_id: ReferralId,
    /// Always `passerelle.status.v1`.
    pub schema_version: StatusV1Tag,
    /// The referral this event is about.
    pub referral_id: ReferralId,
    /// The new status.
    pub status: Status,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// SIRET of the organisation posting the event.
    pub author_siret: Siret,
    /// Why the referral was rejected; present exactly when status is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<RejectionReason>,
    /// What the path led to; present exactly when status is completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// When the appointment is, for a scheduled appointment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment_at: Option<DateTime<Utc>>,
    /// Free-text comment; dropped by default policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}
