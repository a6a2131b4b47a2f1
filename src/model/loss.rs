//! Loss reports: what a translation could not carry, by field path. A
//! translation never drops a field silently.

use serde::Serialize;

/// One field (or element) that the target could not carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loss {
    /// JSON pointer of the field in the source document.
    pub path: String,
    /// Why it could not be carried.
    pub reason: String,
}

/// Everything a translation could not carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LossReport {
    /// The losses, in document order.
    pub losses: Vec<Loss>,
}

impl LossReport {
    /// Records a loss.
    pub fn lose(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.losses.push(Loss {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// Whether nothing was lost.
    pub fn is_empty(&self) -> bool {
        self.losses.is_empty()
    }

    /// Appends another report's losses.
    pub fn extend(&mut self, other: LossReport) {
        self.losses.extend(other.losses);
    }

    /// Whether a path, or a parent of it, was reported lost.
    pub fn covers(&self, path: &str) -> bool {
        self.losses.iter().any(|loss| {
            path == loss.path
                || (path.starts_with(&loss.path) && path[loss.path.len()..].starts_with('/'))
        })
    }
}

/// A translated value and what the translation lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated<T> {
    /// The result.
    pub value: T,
    /// What the source had that the result does not.
    pub losses: LossReport,
}

impl<T> Translated<T> {
    /// A translation that lost nothing.
    pub fn lossless(value: T) -> Self {
        Self {
            value,
            losses: LossReport::default(),
        }
    }
}
