//! The retention policy: a TOML file, validated in full before anything runs.
//!
//! ```toml
//! allowed_regions = ["CN"]          # for `cross_border` (default ["CN"])
//!
//! [tables.api_access]               # how long rows are kept, by their own time
//! keep = "400d"                     # units: s m h d w y (y = 365 d), e.g. "1y30d"
//! [tables.quarantine]
//! keep = "30d"
//!
//! [deadlines]                       # obligation deadlines (SPEC section 4 defaults)
//! user_request = "72h"
//!
//! [clustering]                      # sort old partitions by user_id (fast erasure)
//! tables = ["api_access", "grants"] # default: api_access, grants, deletions
//! target_file_size = "4MiB"         # default: a 32nd of the partition, 1-128 MiB
//! min_age = "1d"                    # cluster a day this long after it ended
//! row_group_rows = 16384            # rows per row group of a clustered file
//!
//! [[holds]]                         # legal holds: no sweep or erase touches these rows
//! reason = "litigation 2026-17"     # required
//! app = "app-3"                     # optional criteria; all given ones must match
//! user = "u-1"
//! from = 2026-01-01T00:00:00Z       # [from, until) on the row's time
//! until = 2027-01-01T00:00:00Z
//! ```
//!
//! Semantics: retention works in whole days. A partition `date=D` of a table
//! with `keep = K` is past its time once `D < date(now - K)`: every row in it
//! is then older than `now - K`; a row is deleted at most one day after its
//! time is up. A hold covers a row when every criterion it gives matches: `app`
//! the row's `app_id`, `user` its `user_id` (in `quarantine`, which has no such
//! columns, the raw message must contain the id), `from`/`until` the row's
//! time (its first of `event_time`, `window_start`, `created_at`,
//! `ingested_at`, `evaluated_at`). A criterion on a column the table lacks
//! does not match (a user hold keeps no `apps` rows).
//!
//! Errors name the file, line and column: an unknown key or table, a negative
//! or unit-less duration, a hold without a reason, bad TOML.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::cluster::ClusterOptions;
use crate::{Error, Result};
use auditlake_schemas::tables;

/// Longest obligation deadline a policy takes (longer ones overflow the
/// time arithmetic of the obligation rules, and mean "never" anyway).
pub const MAX_DEADLINE_DAYS: i64 = 3660;

/// Obligation reasons and their default deadlines (SPEC section 4), in hours.
pub const DEFAULT_DEADLINES_HOURS: [(&str, i64); 5] = [
    ("unsubscribe", 24),
    ("revoke", 24),
    ("platform_order", 24),
    ("user_request", 72),
    ("termination", 72),
];

/// Allowed regions for `cross_border` when the policy names none.
pub const DEFAULT_ALLOWED_REGIONS: [&str; 1] = ["CN"];

/// Tables a policy may give a keep time: every table ingest and detect write.
/// The retention job's own tables (evidence, erasures) are never swept.
pub const SWEEPABLE_TABLES: [&str; 7] = tables::TABLES;

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// SHA-256 of the file's bytes (hex), recorded in every evidence record.
    pub sha256: String,
    /// Keep time per table (tables not named are kept forever).
    pub tables: BTreeMap<String, TableRule>,
    /// Deadline per obligation reason, defaults filled in.
    pub deadlines: BTreeMap<String, TimeDelta>,
    /// Legal holds.
    pub holds: Vec<Hold>,
    /// Allowed regions for `cross_border`.
    pub allowed_regions: Vec<String>,
    /// Sweeps cluster old partitions by user when set.
    pub clustering: Option<ClusterOptions>,
}

/// How long one table's rows are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRule {
    /// Keep rows this long after their time.
    pub keep: TimeDelta,
    /// Line of the rule in the policy file.
    pub line: usize,
}

/// A legal hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Line of the `[[holds]]` entry in the policy file.
    pub line: usize,
    /// Why the rows are held (required).
    pub reason: String,
    /// Only rows of this app.
    pub app: Option<String>,
    /// Only rows of this user.
    pub user: Option<String>,
    /// Only rows at or after this time (UTC microseconds).
    pub from: Option<i64>,
    /// Only rows before this time (UTC microseconds).
    pub until: Option<i64>,
}

impl Hold {
    /// Whether the hold may cover rows of day `date` (days since the epoch).
    pub fn may_cover_day(&self, date: i32) -> bool {
        let start = i64::from(date) * MICROS_PER_DAY;
        let end = start + MICROS_PER_DAY;
        self.from.is_none_or(|f| f < end) && self.until.is_none_or(|u| u > start)
    }

    /// Whether the hold covers a row with these values (`None`: the table
    /// has no such column, which does not match a criterion).
    pub fn covers(&self, app: Option<&str>, user: Option<&str>, time: Option<i64>) -> bool {
        auditlake_schemas::floor::HoldCriteria {
            app: self.app.as_deref(),
            user: self.user.as_deref(),
            from: self.from,
            until: self.until,
        }
        .covers(app, user, time)
    }

    /// A short description (no user id: evidence must not hold one).
    pub fn describe(&self) -> String {
        format!("hold at policy line {} ({:?})", self.line, self.reason)
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::PolicyIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates policy text; `path` is only used in messages.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let at = |span: Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            Error::Policy {
                path: path.clone(),
                line,
                column,
                message,
            }
        };
        let raw: RawPolicy = toml::from_str(text)
            .map_err(|e| at(e.span().unwrap_or(0..0), e.message().trim_end().to_string()))?;

        let mut tables_out = BTreeMap::new();
        for (name, rule) in raw.tables {
            let n = name.get_ref().as_str();
            if n == crate::evidence::EVIDENCE || n == auditlake_schemas::erasure::ERASURES {
                return Err(at(
                    name.span(),
                    format!(
                        "table `{n}` is retention's own append-only record and cannot be swept"
                    ),
                ));
            }
            if !SWEEPABLE_TABLES.contains(&n) {
                return Err(at(
                    name.span(),
                    format!(
                        "unknown table `{n}`; expected one of: {}",
                        SWEEPABLE_TABLES.join(", ")
                    ),
                ));
            }
            let keep = duration(&rule.keep).map_err(|m| at(rule.keep.span(), m))?;
            if keep.is_zero() {
                return Err(at(
                    rule.keep.span(),
                    format!(
                        "keep must be positive (a keep of 0 would delete all of `{n}` but today's \
                         partition); leave the table out to keep it forever"
                    ),
                ));
            }
            let (line, _) = line_col(text, name.span().start);
            tables_out.insert(n.to_string(), (TableRule { keep, line }, rule.keep.span()));
        }
        // Tables detection reads beside the accesses, or derives from them,
        // must be kept at least as long as the accesses. Grants and app
        // declarations: swept sooner, every older access would become a
        // `scope_not_granted` / `undeclared_scope` finding. Findings and
        // obligations: detect derives them again at every run, so swept rows
        // would come back and verify would report them past retention;
        // `unused_scope` dates its findings at the start of a 30-day window,
        // so findings need 31 days whatever the accesses' keep.
        let access_keep = tables_out.get(tables::API_ACCESS).map(|(r, _)| r.keep);
        for (table, least, why) in [
            (
                tables::GRANTS,
                None,
                "detection judges a kept access by the grants before it, so older accesses would all become findings",
            ),
            (
                tables::APPS,
                None,
                "detection judges a kept access by the apps before it, so older accesses would all become findings",
            ),
            (
                tables::FINDINGS,
                Some(TimeDelta::days(31)),
                "detect derives it from them at every run, so swept rows would come back with the next detect and fail verification",
            ),
            (
                tables::OBLIGATIONS,
                None,
                "detect derives it from them at every run, so swept rows would come back with the next detect and fail verification",
            ),
        ] {
            let Some((rule, span)) = tables_out.get(table) else {
                continue;
            };
            // None: the accesses are kept forever.
            let bound = access_keep.map(|a| least.map_or(a, |l| a.max(l)));
            if bound.is_none_or(|b| rule.keep < b) {
                return Err(at(
                    span.clone(),
                    format!(
                        "`{table}` would be kept for less than `{api}`'s keep{} ({}): {why}; \
                         keep `{table}` at least as long",
                        if least.is_some() {
                            " and 31 days (unused_scope's 30-day window)"
                        } else {
                            ""
                        },
                        bound.map_or("forever".to_string(), |b| format!("{}d", b.num_days())),
                        api = tables::API_ACCESS,
                    ),
                ));
            }
        }
        let tables_out: BTreeMap<String, TableRule> =
            tables_out.into_iter().map(|(n, (r, _))| (n, r)).collect();

        let mut deadlines: BTreeMap<String, TimeDelta> = DEFAULT_DEADLINES_HOURS
            .iter()
            .map(|(r, h)| (r.to_string(), TimeDelta::hours(*h)))
            .collect();
        for (reason, value) in raw.deadlines {
            let r = reason.get_ref().as_str();
            if !deadlines.contains_key(r) {
                let known: Vec<&str> = DEFAULT_DEADLINES_HOURS.iter().map(|(r, _)| *r).collect();
                return Err(at(
                    reason.span(),
                    format!(
                        "unknown obligation reason `{r}`; expected one of: {}",
                        known.join(", ")
                    ),
                ));
            }
            let d = duration(&value).map_err(|m| at(value.span(), m))?;
            if d.is_zero() {
                return Err(at(value.span(), "a deadline must be positive".into()));
            }
            if d > TimeDelta::days(MAX_DEADLINE_DAYS) {
                return Err(at(
                    value.span(),
                    format!("a deadline must be at most {MAX_DEADLINE_DAYS} days (ten years)"),
                ));
            }
            deadlines.insert(r.to_string(), d);
        }

        let mut holds = Vec::new();
        for hold in raw.holds {
            let span = hold.span();
            let h = hold.into_inner();
            let reason = match h.reason {
                Some(r) if !r.get_ref().trim().is_empty() => r.into_inner(),
                Some(r) => return Err(at(r.span(), "a hold's reason must not be empty".into())),
                None => {
                    return Err(at(
                        span,
                        "a hold needs a `reason` (why the rows are held)".into(),
                    ));
                }
            };
            let nonempty = |v: Option<Spanned<String>>, what: &str| -> Result<Option<String>> {
                match v {
                    Some(s) if s.get_ref().is_empty() => {
                        Err(at(s.span(), format!("a hold's `{what}` must not be empty")))
                    }
                    other => Ok(other.map(Spanned::into_inner)),
                }
            };
            let app = nonempty(h.app, "app")?;
            let user = nonempty(h.user, "user")?;
            let time = |v: &Option<Spanned<toml::Value>>| -> Result<Option<i64>> {
                v.as_ref()
                    .map(|v| instant(v).map_err(|m| at(v.span(), m)))
                    .transpose()
            };
            let from = time(&h.from)?;
            let until = time(&h.until)?;
            if let (Some(f), Some(u)) = (from, until)
                && f >= u
            {
                return Err(at(
                    h.until.as_ref().map_or(span.clone(), |u| u.span()),
                    "a hold's `until` must be after its `from`".into(),
                ));
            }
            let (line, _) = line_col(text, span.start);
            holds.push(Hold {
                line,
                reason,
                app,
                user,
                from,
                until,
            });
        }

        let allowed_regions = match raw.allowed_regions {
            None => DEFAULT_ALLOWED_REGIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            Some(list) => {
                let mut out = Vec::new();
                for r in list.into_inner() {
                    let v = r.get_ref();
                    if v.len() != 2 || !v.bytes().all(|b| b.is_ascii_uppercase()) {
                        return Err(at(
                            r.span(),
                            format!("{v:?} is not an ISO 3166-1 alpha-2 region (e.g. \"CN\")"),
                        ));
                    }
                    out.push(r.into_inner());
                }
                out
            }
        };

        let clustering = match raw.clustering {
            None => None,
            Some(c) => {
                let mut opts = ClusterOptions::default();
                if let Some(list) = c.tables {
                    opts.tables.clear();
                    for t in list {
                        if !crate::filters::USER_TABLES.contains(&t.get_ref().as_str())
                            || t.get_ref() == tables::QUARANTINE
                        {
                            return Err(at(
                                t.span(),
                                format!(
                                    "cannot cluster `{}` by user; expected tables with a user_id: api_access, grants, deletions, findings, obligations",
                                    t.get_ref()
                                ),
                            ));
                        }
                        opts.tables.push(t.into_inner());
                    }
                }
                if let Some(v) = c.target_file_size {
                    opts.target_file_size = Some(size(&v).map_err(|m| at(v.span(), m))?);
                }
                if let Some(v) = c.min_age {
                    opts.min_age = duration(&v).map_err(|m| at(v.span(), m))?;
                }
                if let Some(v) = c.row_group_rows {
                    opts.row_group_rows = match v.get_ref() {
                        toml::Value::Integer(n) if *n >= 1 => {
                            usize::try_from(*n).unwrap_or(usize::MAX)
                        }
                        other => {
                            return Err(at(
                                v.span(),
                                format!("row_group_rows must be a positive integer, not {other}"),
                            ));
                        }
                    };
                }
                Some(opts)
            }
        };

        Ok(Self {
            clustering,
            path,
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            tables: tables_out,
            deadlines,
            holds,
            allowed_regions,
        })
    }

    /// The first day (days since the epoch) that `table` keeps at `now`:
    /// partitions before it are past their time. `None`: kept forever.
    pub fn cutoff_date(&self, table: &str, now: DateTime<Utc>) -> Option<i32> {
        let rule = self.tables.get(table)?;
        let cutoff = now.checked_sub_signed(rule.keep)?;
        Some(cutoff.timestamp_micros().div_euclid(MICROS_PER_DAY) as i32)
    }

    /// The deadline of an obligation reason.
    pub fn deadline(&self, reason: &str) -> Option<TimeDelta> {
        self.deadlines.get(reason).copied()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    tables: BTreeMap<Spanned<String>, RawTable>,
    #[serde(default)]
    deadlines: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    holds: Vec<Spanned<RawHold>>,
    #[serde(default)]
    allowed_regions: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    clustering: Option<RawClustering>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClustering {
    tables: Option<Vec<Spanned<String>>>,
    target_file_size: Option<Spanned<toml::Value>>,
    min_age: Option<Spanned<toml::Value>>,
    row_group_rows: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    keep: Spanned<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHold {
    reason: Option<Spanned<String>>,
    app: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    from: Option<Spanned<toml::Value>>,
    until: Option<Spanned<toml::Value>>,
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

fn duration(v: &Spanned<toml::Value>) -> std::result::Result<TimeDelta, String> {
    match v.get_ref() {
        toml::Value::String(s) => parse_duration(s),
        toml::Value::Integer(n) if *n < 0 => Err(format!("negative duration {n}")),
        toml::Value::Integer(n) => Err(format!(
            "duration {n} needs a unit, e.g. \"{n}d\" (units: s m h d w y)"
        )),
        other => Err(format!(
            "expected a duration such as \"30d\", found {}",
            other.type_str()
        )),
    }
}

fn size(v: &Spanned<toml::Value>) -> std::result::Result<u64, String> {
    let s = match v.get_ref() {
        toml::Value::String(s) => s.trim().to_string(),
        toml::Value::Integer(n) if *n > 0 => return Ok(*n as u64),
        other => {
            return Err(format!(
                "expected a size such as \"4MiB\", found {}",
                other.type_str()
            ));
        }
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. \"4MiB\")"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("size {s:?} must be positive"))
}

/// Parses `30d`, `24h`, `1y30d`, `90m`, `2w`, `45s` (`y` = 365 days).
pub fn parse_duration(s: &str) -> std::result::Result<TimeDelta, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("negative duration {s:?}"));
    }
    if t.is_empty() {
        return Err("empty duration; expected e.g. \"30d\"".into());
    }
    let mut total = TimeDelta::zero();
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{s:?} is not a duration (e.g. \"30d\", \"24h\", \"1y\")"
            ));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "y" => 365 * 86_400,
            "" => return Err(format!("{s:?}: a number needs a unit (s m h d w y)")),
            other => return Err(format!("{s:?}: unknown unit {other:?} (s m h d w y)")),
        };
        let part = n
            .checked_mul(secs)
            .and_then(TimeDelta::try_seconds)
            .ok_or_else(|| format!("{s:?}: too large"))?;
        total = total
            .checked_add(&part)
            .ok_or_else(|| format!("{s:?}: too large"))?;
    }
    Ok(total)
}

/// A point in time: a TOML datetime with offset, a TOML date (midnight UTC),
/// or an RFC 3339 string.
fn instant(v: &Spanned<toml::Value>) -> std::result::Result<i64, String> {
    let text = match v.get_ref() {
        toml::Value::Datetime(d) => {
            if d.date.is_some() && d.time.is_none() {
                format!("{d}T00:00:00Z")
            } else if d.offset.is_none() {
                return Err(format!(
                    "time {d} has no offset; write it in UTC, e.g. {d}Z"
                ));
            } else {
                d.to_string()
            }
        }
        toml::Value::String(s) => s.clone(),
        other => {
            return Err(format!(
                "expected a time such as 2026-01-01T00:00:00Z, found {}",
                other.type_str()
            ));
        }
    };
    auditlake_schemas::time::parse_rfc3339_micros(&text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, String) {
        match Policy::parse(text, "p.toml").unwrap_err() {
            Error::Policy { line, message, .. } => (line, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn the_example_policy_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policy.example.toml");
        let p = Policy::load(path).unwrap();
        // Every table but grants and apps (see the example's comment).
        assert_eq!(p.tables.len(), SWEEPABLE_TABLES.len() - 2);
        assert!(!p.tables.contains_key("grants") && !p.tables.contains_key("apps"));
        assert_eq!(p.holds.len(), 1);
    }

    #[test]
    fn a_full_policy() {
        let p = Policy::parse(
            r#"
allowed_regions = ["CN", "HK"]

[tables.api_access]
keep = "400d"
[tables.quarantine]
keep = "1y2w"

[deadlines]
user_request = "48h"

[[holds]]
reason = "litigation"
app = "app-3"
from = 2026-01-01T00:00:00Z
until = "2027-01-01T00:00:00Z"

[[holds]]
reason = "regulator"
user = "u-1"
"#,
            "p.toml",
        )
        .unwrap();
        assert_eq!(p.tables["api_access"].keep, TimeDelta::days(400));
        assert_eq!(p.tables["api_access"].line, 4);
        assert_eq!(p.tables["quarantine"].keep, TimeDelta::days(379));
        assert_eq!(p.deadline("user_request"), Some(TimeDelta::hours(48)));
        assert_eq!(p.deadline("unsubscribe"), Some(TimeDelta::hours(24)));
        assert_eq!(p.holds.len(), 2);
        assert_eq!(p.holds[0].line, 12);
        assert_eq!(p.holds[1].user.as_deref(), Some("u-1"));
        assert_eq!(p.allowed_regions, vec!["CN", "HK"]);
        assert_eq!(p.sha256.len(), 64);
        let now = DateTime::parse_from_rfc3339("2026-12-31T12:00:00Z")
            .unwrap()
            .to_utc();
        let cutoff = p.cutoff_date("api_access", now).unwrap();
        // 2026-12-31 - 400 d = 2025-11-26.
        assert_eq!(
            cutoff,
            auditlake_schemas::time::days_from_civil(2025, 11, 26) as i32
        );
        assert_eq!(p.cutoff_date("grants", now), None);
    }

    #[test]
    fn empty_policy_has_defaults() {
        let p = Policy::parse("", "p.toml").unwrap();
        assert!(p.tables.is_empty());
        assert_eq!(p.deadlines.len(), 5);
        assert_eq!(p.allowed_regions, vec!["CN"]);
    }

    #[test]
    fn zero_keeps_and_state_tables_kept_shorter_than_accesses_are_refused() {
        let (line, msg) = err("[tables.quarantine]\nkeep = \"0d\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("positive"), "{msg}");
        // Grants kept shorter than the accesses they authorise.
        let (line, msg) =
            err("[tables.api_access]\nkeep = \"400d\"\n[tables.grants]\nkeep = \"3d\"\n");
        assert_eq!(line, 4);
        assert!(
            msg.contains("at least as long") && msg.contains("400d"),
            "{msg}"
        );
        // Accesses kept forever: any keep of the app registry is too short.
        let (line, msg) = err("[tables.apps]\nkeep = \"3y\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("forever"), "{msg}");
        // Findings swept sooner than the accesses detect derives them from.
        let (line, msg) =
            err("[tables.api_access]\nkeep = \"400d\"\n[tables.findings]\nkeep = \"7d\"\n");
        assert_eq!(line, 4);
        assert!(
            msg.contains("detect derives") && msg.contains("400d"),
            "{msg}"
        );
        // ... and unused_scope's window: 31 days even with accesses kept 20.
        let (_, msg) =
            err("[tables.api_access]\nkeep = \"20d\"\n[tables.findings]\nkeep = \"20d\"\n");
        assert!(msg.contains("31d"), "{msg}");
        // Obligations: as long as the accesses (unsubscribes and revokes come
        // from grants, kept at least as long), whatever the deletions' keep.
        let (_, msg) = err(
            "[tables.api_access]\nkeep = \"20d\"\n[tables.deletions]\nkeep = \"3d\"\n\
             [tables.obligations]\nkeep = \"3d\"\n",
        );
        assert!(msg.contains("20d"), "{msg}");
        Policy::parse(
            "[tables.api_access]\nkeep = \"20d\"\n[tables.deletions]\nkeep = \"3d\"\n\
             [tables.obligations]\nkeep = \"20d\"\n[tables.findings]\nkeep = \"31d\"\n",
            "p.toml",
        )
        .unwrap();
        // As long, or longer: fine.
        Policy::parse(
            "[tables.api_access]\nkeep = \"30d\"\n[tables.grants]\nkeep = \"30d\"\n\
             [tables.apps]\nkeep = \"1y\"\n",
            "p.toml",
        )
        .unwrap();
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            err("[tables.api_access]\nkeep = \"30d\"\n\n[tables.nope]\nkeep = \"1d\"\n").0,
            4
        );
        let (line, msg) = err("[tables.grants]\nkeep = \"-5d\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("negative"), "{msg}");
        let (line, msg) = err("[tables.grants]\nkeep = -5\n");
        assert_eq!(line, 2);
        assert!(msg.contains("negative"), "{msg}");
        let (line, msg) = err("[tables.grants]\nkeep = 30\n");
        assert_eq!(line, 2);
        assert!(msg.contains("unit"), "{msg}");
        let (line, _) = err("[tables.grants]\nkeep = \"30d\"\nkep = 3\n");
        assert_eq!(line, 3);
        let (line, msg) = err("# c\n[tables.grants\nkeep = \"30d\"\n");
        assert_eq!(line, 2, "{msg}");
        let (line, msg) = err("\n\n[[holds]]\napp = \"a\"\n");
        assert_eq!(line, 3);
        assert!(msg.contains("reason"), "{msg}");
        let (line, msg) = err(
            "[[holds]]\nreason = \"x\"\nfrom = 2026-02-01T00:00:00Z\nuntil = 2026-01-01T00:00:00Z\n",
        );
        assert_eq!(line, 4);
        assert!(msg.contains("after"), "{msg}");
        let (line, msg) = err("[deadlines]\nrefund = \"1d\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("unknown obligation reason"), "{msg}");
        let (line, msg) = err("allowed_regions = [\"china\"]\n");
        assert_eq!(line, 1);
        assert!(msg.contains("alpha-2"), "{msg}");
        let (line, msg) = err("[tables.retention_evidence]\nkeep = \"1d\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("append-only"), "{msg}");
        let (line, msg) = err("[clustering]\ntables = [\"apps\"]\n");
        assert_eq!(line, 2);
        assert!(msg.contains("cannot cluster"), "{msg}");
        let p = Policy::parse("[clustering]\ntarget_file_size = \"2MiB\"\n", "p.toml").unwrap();
        let c = p.clustering.unwrap();
        assert_eq!(c.target_file_size, Some(2 << 20));
        assert_eq!(c.row_group_rows, crate::cluster::CLUSTERED_ROW_GROUP_ROWS);
        let p = Policy::parse("[clustering]\nrow_group_rows = 4096\n", "p.toml").unwrap();
        assert_eq!(p.clustering.unwrap().row_group_rows, 4096);
        let (line, msg) = err("[clustering]\n\nrow_group_rows = -3\n");
        assert_eq!(line, 3);
        assert!(msg.contains("positive integer"), "{msg}");
        assert_eq!(c.tables.len(), 3);
        let (_, msg) = err("[tables.grants]\nkeep = \"30x\"\n");
        assert!(msg.contains("unknown unit"), "{msg}");
    }

    #[test]
    fn holds_match_by_all_criteria() {
        let h = Hold {
            line: 1,
            reason: "r".into(),
            app: Some("a".into()),
            user: None,
            from: Some(100),
            until: Some(200),
        };
        assert!(h.covers(Some("a"), Some("u"), Some(150)));
        assert!(!h.covers(Some("b"), Some("u"), Some(150)));
        assert!(!h.covers(Some("a"), Some("u"), Some(200)));
        assert!(!h.covers(None, Some("u"), Some(150)));
        assert!(h.may_cover_day(0));
        assert!(!h.may_cover_day(1));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1d12h").unwrap(), TimeDelta::hours(36));
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
    }
}
