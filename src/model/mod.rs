//! The canonical model: referrals in two schema versions, status events, and
//! the identifiers they hold. Pure data and pure conversions; no I/O.
//!
//! Version 2 is the form the gateway works on; version 1 is accepted and served
//! through [`convert`], whose loss reports say what a direction cannot carry.

pub mod categories;
pub mod common;
pub mod convert;
pub mod ids;
pub mod lifecycle;
pub mod loss;
pub mod proto;
pub mod status;
pub mod v1;
pub mod v2;

pub use loss::{Loss, LossReport, Translated};

/// Any message the gateway carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A referral (orientation), in the canonical version 2 form.
    Referral(Box<v2::Referral>),
    /// A status event about a referral.
    Status(Box<status::StatusEvent>),
}
