//! The four input topics of the API platform and the lake tables they land in.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// An input topic (SPEC section 2). Each lands in the table of the same name
/// with `-` replaced by `_`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `api-access`: one message per API call, written by the gateway.
    ApiAccess,
    /// `grants`: a user's authorisation of an app.
    Grants,
    /// `apps`: the app registry and its lifecycle.
    Apps,
    /// `deletions`: deletion requests and the developers' receipts.
    Deletions,
}

impl Topic {
    /// All topics, in the order they are usually ingested.
    pub const ALL: [Topic; 4] = [
        Topic::Apps,
        Topic::Grants,
        Topic::Deletions,
        Topic::ApiAccess,
    ];

    /// The default Kafka topic name.
    pub fn name(self) -> &'static str {
        match self {
            Topic::ApiAccess => "api-access",
            Topic::Grants => "grants",
            Topic::Apps => "apps",
            Topic::Deletions => "deletions",
        }
    }

    /// The lake table the topic lands in.
    pub fn table(self) -> &'static str {
        match self {
            Topic::ApiAccess => crate::tables::API_ACCESS,
            Topic::Grants => crate::tables::GRANTS,
            Topic::Apps => crate::tables::APPS,
            Topic::Deletions => crate::tables::DELETIONS,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Topic {
    type Err = Error;

    /// Accepts the topic name (`api-access`) or the table name (`api_access`).
    fn from_str(s: &str) -> Result<Self> {
        Topic::ALL
            .into_iter()
            .find(|t| t.name() == s || t.table() == s)
            .ok_or_else(|| Error::UnknownName {
                kind: "topic",
                name: s.to_string(),
                expected: Topic::ALL.map(|t| t.name()).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_topic_and_table_names() {
        assert_eq!("api-access".parse::<Topic>().unwrap(), Topic::ApiAccess);
        assert_eq!("api_access".parse::<Topic>().unwrap(), Topic::ApiAccess);
        let err = "access".parse::<Topic>().unwrap_err().to_string();
        assert!(
            err.contains("unknown topic \"access\"") && err.contains("api-access"),
            "{err}"
        );
    }
}
