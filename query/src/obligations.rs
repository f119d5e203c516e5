//! Deletion obligations (SPEC section 4): the policy that sets their deadlines
//! and the states they can be in. The obligations themselves are computed in
//! SQL by the view `obligations_at` (`views/16_obligations_at.sql`) and written
//! to the lake table `obligations` by [`crate::detect::Detect`].
//!
//! ```text
//! unsubscribe | revoke leaving no scope | terminate | deletion request
//!     --(prior data access of that user / any user?)--> obligation
//!     created_at + deadline(reason) = due_at
//!     first receipt at/after created_at --> fulfilled | fulfilled_late
//!         then an event naming the user, no new grant --> not_effective
//!     no receipt --> open (now <= due_at) | overdue (now > due_at)
//! ```

use std::collections::BTreeMap;

use chrono::Duration;

/// Default deadline per obligation reason (SPEC section 4), in hours.
pub const DEFAULT_DEADLINES_HOURS: [(&str, i64); 5] = [
    ("unsubscribe", 24),
    ("revoke", 24),
    ("platform_order", 24),
    ("user_request", 72),
    ("termination", 72),
];

/// Deadline of a reason the policy does not name (a request with an unknown
/// reason): the shortest default, so nothing unknown gets more time.
pub const DEFAULT_FALLBACK_DEADLINE_HOURS: i64 = 24;

/// The states of an obligation at the evaluation time.
pub const STATES: [&str; 5] = [
    "open",
    "fulfilled",
    "fulfilled_late",
    "overdue",
    "not_effective",
];

/// Deadlines of deletion obligations, per reason. The retention policy file
/// overrides these; [`Default`] gives SPEC section 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObligationPolicy {
    /// Reason (`unsubscribe`, `revoke`, `platform_order`, `user_request`,
    /// `termination`) -> time allowed from created_at to due_at.
    pub deadlines: BTreeMap<String, Duration>,
    /// Deadline of a reason not in `deadlines`.
    pub fallback: Duration,
}

impl Default for ObligationPolicy {
    fn default() -> Self {
        Self {
            deadlines: DEFAULT_DEADLINES_HOURS
                .iter()
                .map(|(r, h)| (r.to_string(), Duration::hours(*h)))
                .collect(),
            fallback: Duration::hours(DEFAULT_FALLBACK_DEADLINE_HOURS),
        }
    }
}

impl ObligationPolicy {
    /// The default policy with some deadlines replaced.
    pub fn with_deadlines<I, S>(mut self, deadlines: I) -> Self
    where
        I: IntoIterator<Item = (S, Duration)>,
        S: Into<String>,
    {
        for (reason, d) in deadlines {
            self.deadlines.insert(reason.into(), d);
        }
        self
    }

    /// The deadline of `reason`.
    pub fn deadline(&self, reason: &str) -> Duration {
        self.deadlines.get(reason).copied().unwrap_or(self.fallback)
    }

    /// The `policy_deadlines` view's SQL (see [`crate::views`]).
    pub(crate) fn view_sql(&self) -> String {
        let rows: Vec<(String, std::time::Duration)> = self
            .deadlines
            .iter()
            .map(|(r, d)| (r.clone(), d.to_std().unwrap_or_default()))
            .collect();
        crate::views::policy_deadlines_sql(&rows, self.fallback.to_std().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec() {
        let p = ObligationPolicy::default();
        assert_eq!(p.deadline("unsubscribe"), Duration::hours(24));
        assert_eq!(p.deadline("user_request"), Duration::hours(72));
        assert_eq!(p.deadline("termination"), Duration::hours(72));
        assert_eq!(p.deadline("something_else"), Duration::hours(24));
        let p = p.with_deadlines([("revoke", Duration::hours(1))]);
        assert_eq!(p.deadline("revoke"), Duration::hours(1));
        assert!(p.view_sql().contains("('revoke', INTERVAL '3600 seconds')"));
    }
}
