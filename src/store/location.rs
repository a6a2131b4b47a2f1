//! [`StoreLocation`]: where the store is, as the configuration or the
//! `--store` option names it.

use std::path::PathBuf;

/// Where the store is, as the configuration (`[store] sqlite = FILE` or
/// `postgres = URL`) or the `--store` option names it.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database URL.
    Postgres(String),
}

impl StoreLocation {
    /// A `postgres://` or `postgresql://` URL, or else a file path.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Self::Postgres(text.to_owned())
        } else {
            Self::Sqlite(PathBuf::from(text))
        }
    }
}

/// Shows a database URL without its password.
impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            Self::Postgres(url) => write!(f, "Postgres({})", without_password(url)),
        }
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{}", without_password(url)),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_a_url_or_a_file_and_never_shows_a_password() {
        assert_eq!(
            StoreLocation::parse("passerelle.db"),
            StoreLocation::Sqlite(PathBuf::from("passerelle.db"))
        );
        let location = StoreLocation::parse("postgres://gateway:s3cret@db.example:5432/passerelle");
        assert!(matches!(location, StoreLocation::Postgres(_)));
        assert_eq!(
            location.to_string(),
            "postgres://gateway@db.example:5432/passerelle"
        );
        assert!(!format!("{location:?}").contains("s3cret"));
    }
}
