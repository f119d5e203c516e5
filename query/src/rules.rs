//! Detection rules as data: one SQL file per rule id (SPEC section 3).
//!
//! A rule file is a header of `--` comment lines naming the rule, then one SQL
//! statement (a query) over the lake tables and the helper views of
//! [`crate::views`]:
//!
//! ```sql
//! -- id: scope_not_granted
//! -- clause: 6.5.1, 9.3
//! -- severity: high
//! -- Free text after the three keys is documentation.
//! SELECT a.app_id, a.developer_id, a.user_id, a.required_scope AS scope,
//!        a.event_time, [a.event_id] AS event_ids
//! FROM data_access a WHERE ...
//! ```
//!
//! The query returns one row per finding, with any of the finding columns
//! ([`FINDING_COLUMNS`]) by name; missing ones are null (`event_ids`: empty).
//! A rule may return `clause` or `severity` to override its header per row.
//! Parameters are written `$now` (the evaluation time, a UTC timestamp) and
//! `$allowed_regions` (the allowed client regions as a list of string
//! literals, for `IN (...)`); [`bind`] substitutes them before planning.
//!
//! The built-in rules ship inside the binary ([`RuleSet::builtin`]); a
//! directory of `<id>.sql` files adds rules or replaces built-ins of the same
//! id ([`RuleSet::with_dir`]). A bad file fails with its path and line.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::sql::parser::DFParser;

use crate::{Error, Result};

/// The built-in rules, one per SPEC rule id: (file name, text).
pub const BUILTIN: [(&str, &str); 11] = [
    (
        "access_after_revocation.sql",
        include_str!("../rules/access_after_revocation.sql"),
    ),
    (
        "access_after_termination.sql",
        include_str!("../rules/access_after_termination.sql"),
    ),
    (
        "bulk_harvest.sql",
        include_str!("../rules/bulk_harvest.sql"),
    ),
    (
        "client_id_sharing.sql",
        include_str!("../rules/client_id_sharing.sql"),
    ),
    (
        "cross_border.sql",
        include_str!("../rules/cross_border.sql"),
    ),
    (
        "deletion_not_effective.sql",
        include_str!("../rules/deletion_not_effective.sql"),
    ),
    (
        "deletion_overdue.sql",
        include_str!("../rules/deletion_overdue.sql"),
    ),
    (
        "scope_not_granted.sql",
        include_str!("../rules/scope_not_granted.sql"),
    ),
    (
        "undeclared_category.sql",
        include_str!("../rules/undeclared_category.sql"),
    ),
    (
        "undeclared_scope.sql",
        include_str!("../rules/undeclared_scope.sql"),
    ),
    (
        "unused_scope.sql",
        include_str!("../rules/unused_scope.sql"),
    ),
];

/// The columns a rule may return (SPEC section 6), plus `clause` and
/// `severity`, which override the header for a row.
pub const FINDING_COLUMNS: [&str; 13] = [
    "app_id",
    "developer_id",
    "user_id",
    "scope",
    "reason",
    "event_time",
    "window_start",
    "window_end",
    "created_at",
    "due_at",
    "event_ids",
    "clause",
    "severity",
];

/// The severities a rule may have, least to most severe.
pub const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// The parameters a rule or view may use.
pub const PARAMETERS: [&str; 2] = ["now", "allowed_regions"];

/// One detection rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule id (`-- id:`), e.g. `scope_not_granted`.
    pub id: String,
    /// The agreement clause it enforces (`-- clause:`).
    pub clause: String,
    /// `low`, `medium`, `high` or `critical` (`-- severity:`).
    pub severity: String,
    /// The whole file text, header included (so line numbers are the file's).
    pub sql: String,
    /// Where it came from: `builtin:<file>` or the file's path.
    pub source: String,
    /// 1-based line where the SQL statement starts.
    pub statement_line: usize,
}

impl Rule {
    /// Parses a rule file's text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Rule> {
        let err = |line: usize, message: String| Error::Rule {
            file: source.to_string(),
            line,
            message,
        };
        // A byte-order mark (some editors on Windows write one) is not text.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let (mut id, mut clause, mut severity) = (None, None, None);
        let mut statement_line = None;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let Some(comment) = line.strip_prefix("--") else {
                statement_line = Some(line_no);
                break;
            };
            let Some((key, value)) = comment.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let slot = match key.trim() {
                "id" => &mut id,
                "clause" => &mut clause,
                "severity" => &mut severity,
                _ => continue,
            };
            if slot.is_some() {
                return Err(err(line_no, format!("`{}` given twice", key.trim())));
            }
            if value.is_empty() {
                return Err(err(line_no, format!("`{}` has no value", key.trim())));
            }
            *slot = Some((line_no, value.to_string()));
        }
        let header = |slot: Option<(usize, String)>, key: &str| {
            slot.ok_or_else(|| {
                err(
                    1,
                    format!("missing header line `-- {key}: ...` (needed: id, clause, severity)"),
                )
            })
        };
        let (id_line, id) = header(id, "id")?;
        let (_, clause) = header(clause, "clause")?;
        let (sev_line, severity) = header(severity, "severity")?;
        if !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(err(
                id_line,
                format!("rule id {id:?} must be lowercase letters, digits and `_`"),
            ));
        }
        if !SEVERITIES.contains(&severity.as_str()) {
            return Err(err(
                sev_line,
                format!(
                    "severity {severity:?} is not one of {}",
                    SEVERITIES.join(", ")
                ),
            ));
        }
        let statement_line = statement_line.ok_or_else(|| {
            err(
                text.lines().count().max(1),
                "no SQL statement after the header".into(),
            )
        })?;
        check_parameters(text, source)?;
        let statements = DFParser::parse_sql(text).map_err(|e| {
            let message = e.to_string();
            // The parser gives a position except at the end of the text.
            let fallback = if message.contains("EOF") {
                text.trim_end().lines().count()
            } else {
                statement_line
            };
            err(line_of_parser_error(&message).unwrap_or(fallback), message)
        })?;
        if statements.len() != 1 {
            return Err(err(
                statement_line,
                format!(
                    "a rule file holds exactly one SQL statement, found {}",
                    statements.len()
                ),
            ));
        }
        let is_query = matches!(
            statements.front(),
            Some(datafusion::sql::parser::Statement::Statement(s))
                if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_))
        );
        if !is_query {
            return Err(err(
                statement_line,
                "a rule is one query (SELECT or WITH ... SELECT) whose rows are its findings"
                    .into(),
            ));
        }
        Ok(Rule {
            id,
            clause,
            severity,
            sql: text.to_string(),
            source: source.to_string(),
            statement_line,
        })
    }
}

/// The line number in a SQL parser message (`... at Line: 7, Column: 3`).
pub(crate) fn line_of_parser_error(message: &str) -> Option<usize> {
    let rest = &message[message.find("Line: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Rejects `$name` parameters other than [`PARAMETERS`], naming the line.
fn check_parameters(text: &str, source: &str) -> Result<()> {
    let mut bad = None;
    scan(text, |name, line| {
        if bad.is_none() && !PARAMETERS.contains(&name) {
            bad = Some((name.to_string(), line));
        }
        None
    });
    match bad {
        Some((name, line)) => Err(Error::Rule {
            file: source.to_string(),
            line,
            message: format!(
                "unknown parameter ${name}; known: {}",
                PARAMETERS
                    .iter()
                    .map(|p| format!("${p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
        None => Ok(()),
    }
}

/// Walks `text`, calling `f(name, line)` for each `$name` outside string
/// literals, quoted identifiers and comments; where `f` returns a string it
/// replaces the `$name`. Returns the rewritten text (line breaks kept).
fn scan(text: &str, mut f: impl FnMut(&str, usize) -> Option<String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut i, mut line) = (0, 1);
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    line += usize::from(bytes[i] == b'\n');
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                out.push_str(&text[start..i]);
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let start = i;
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                out.push_str(&text[start..i]);
            }
            b'$' => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                let name = &text[start..end];
                match (!name.is_empty()).then(|| f(name, line)).flatten() {
                    Some(value) => out.push_str(&value),
                    None => out.push_str(&text[i..end]),
                }
                i = end.max(i + 1);
            }
            _ => {
                line += usize::from(c == b'\n');
                let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[i..i + ch_len]);
                i += ch_len;
            }
        }
    }
    out
}

/// Substitutes `$name` parameters with SQL text (e.g. a timestamp literal).
/// Names not in `params` are left as they are.
pub fn bind(sql: &str, params: &[(&str, String)]) -> String {
    scan(sql, |name, _| {
        params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    })
}

/// A set of rules by id.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: BTreeMap<String, Rule>,
}

impl RuleSet {
    /// The built-in rules (one per SPEC rule id).
    pub fn builtin() -> Self {
        let mut set = RuleSet::default();
        for (file, text) in BUILTIN {
            let rule = Rule::parse(text, &format!("builtin:{file}"))
                .unwrap_or_else(|e| panic!("built-in rule is invalid (a bug): {e}"));
            set.rules.insert(rule.id.clone(), rule);
        }
        set
    }

    /// Adds every `*.sql` file of `dir` as a rule, replacing a rule of the same
    /// id. A file's name must be `<id>.sql`.
    pub fn with_dir(mut self, dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Rule {
            file: dir.display().to_string(),
            line: 0,
            message: format!("cannot read the rules directory: {e}"),
        })?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        paths.sort();
        for path in paths {
            let source = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| Error::Rule {
                file: source.clone(),
                line: 0,
                message: format!("cannot read: {e}"),
            })?;
            let rule = Rule::parse(&text, &source)?;
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if stem != rule.id {
                return Err(Error::Rule {
                    file: source,
                    line: 1,
                    message: format!(
                        "file name must be the rule id: `{}.sql` declares id {:?}",
                        stem, rule.id
                    ),
                });
            }
            self.rules.insert(rule.id.clone(), rule);
        }
        Ok(self)
    }

    /// Adds or replaces one rule.
    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rules.insert(rule.id.clone(), rule);
        self
    }

    /// Keeps only the rules named in `ids`; an unknown id is an error.
    pub fn select<S: AsRef<str>>(mut self, ids: &[S]) -> Result<Self> {
        for id in ids {
            if !self.rules.contains_key(id.as_ref()) {
                return Err(Error::Config(format!(
                    "unknown rule {:?}; known rules: {}",
                    id.as_ref(),
                    self.ids().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        self.rules
            .retain(|id, _| ids.iter().any(|i| i.as_ref() == id));
        Ok(self)
    }

    /// The rule ids, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.rules.keys().map(String::as_str)
    }

    /// The rules, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }

    /// A rule by id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.get(id)
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_cover_every_spec_rule() {
        let set = RuleSet::builtin();
        let ids: Vec<_> = set.ids().collect();
        assert_eq!(
            ids,
            [
                "access_after_revocation",
                "access_after_termination",
                "bulk_harvest",
                "client_id_sharing",
                "cross_border",
                "deletion_not_effective",
                "deletion_overdue",
                "scope_not_granted",
                "undeclared_category",
                "undeclared_scope",
                "unused_scope"
            ]
        );
        for (file, _) in BUILTIN {
            let id = file.trim_end_matches(".sql");
            assert_eq!(set.get(id).unwrap().source, format!("builtin:{file}"));
        }
    }

    #[test]
    fn header_errors_name_the_line() {
        let e = Rule::parse(
            "-- id: x\n-- clause: 1\n-- severity: huge\nSELECT 1",
            "r.sql",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("r.sql:3: severity \"huge\""), "{e}");
        let e = Rule::parse(
            "-- id: x\n-- clause: 1\n-- severity: low\nCREATE VIEW v AS SELECT 1",
            "r.sql",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("r.sql:4") && e.contains("one query"), "{e}");
        let e = Rule::parse("-- id: x\n-- severity: low\nSELECT 1", "r.sql")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing header line `-- clause: ...`"), "{e}");
        let e = Rule::parse("-- id: x\n-- clause: 1\n-- severity: low\n", "r.sql")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no SQL statement"), "{e}");
    }

    /// A rule file saved with a byte-order mark reads as without one.
    #[test]
    fn a_byte_order_mark_is_not_text() {
        let rule = Rule::parse(
            "\u{feff}-- id: x\r\n-- clause: 1\r\n-- severity: low\r\nSELECT 1",
            "r.sql",
        )
        .unwrap();
        assert_eq!(rule.id, "x");
    }

    #[test]
    fn sql_errors_name_the_line() {
        let text = "-- id: x\n-- clause: 1\n-- severity: low\nSELECT a\nFROM t\nWHERE (b =\n";
        let e = Rule::parse(text, "r.sql").unwrap_err().to_string();
        assert!(e.starts_with("r.sql:"), "{e}");
        let text = "-- id: x\n-- clause: 1\n-- severity: low\nSELECT 1;\nSELECT 2";
        let e = Rule::parse(text, "r.sql").unwrap_err().to_string();
        assert!(
            e.starts_with("r.sql:4: a rule file holds exactly one"),
            "{e}"
        );
        let text = "-- id: x\n-- clause: 1\n-- severity: low\nSELECT 1\nWHERE t < $later";
        let e = Rule::parse(text, "r.sql").unwrap_err().to_string();
        assert!(e.starts_with("r.sql:5: unknown parameter $later"), "{e}");
    }

    #[test]
    fn bind_skips_strings_and_comments() {
        let sql =
            "SELECT '$now', \"$now\" -- $now\nFROM t WHERE x <= $now AND r IN ($allowed_regions)";
        let out = bind(
            sql,
            &[("now", "NOW()".into()), ("allowed_regions", "'CN'".into())],
        );
        assert_eq!(
            out,
            "SELECT '$now', \"$now\" -- $now\nFROM t WHERE x <= NOW() AND r IN ('CN')"
        );
    }
}
