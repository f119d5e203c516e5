//! The read-only policy: what each SQL statement a client sends is allowed to do.
//!
//! Decided on the parsed statement before anything is planned, from an allow
//! list: queries (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`, `SHOW TABLES`), the
//! client-session statements every driver sends (`SET` of client settings,
//! `SHOW`, `BEGIN`/`COMMIT`/`ROLLBACK`, `DISCARD`), and nothing else. Everything
//! that would write (DDL, DML, `COPY`), touch files, change the engine's settings
//! (`SET datafusion.*`) or switch roles is refused with the SQLSTATE PostgreSQL
//! itself uses on a read-only server, so clients and BI tools show a familiar
//! error. A second line of defence checks the planned query too
//! ([`super::exec`] verifies every logical plan with DDL, DML and statements
//! disallowed).

use datafusion::sql::sqlparser::ast::{CopyTarget, Set, Statement};
use datafusion_postgres::pgwire;
use pgwire::error::{ErrorInfo, PgWireError};

/// read_only_sql_transaction: the statement would change the lake.
pub const READ_ONLY: &str = "25006";
/// insufficient_privilege: files, programs, roles and engine settings.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// feature_not_supported.
pub const NOT_SUPPORTED: &str = "0A000";
/// invalid_parameter_value: `SET TIME ZONE` to a zone that does not exist.
pub const INVALID_PARAMETER_VALUE: &str = "22023";

/// Client settings the datafusion-postgres `SET`/`SHOW` hook keeps per
/// connection (formatting, search path, statement timeout).
const CLIENT_SETTINGS: [&str; 7] = [
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

/// What to do with one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Plan and run it over the lake, within the query's time and memory bounds.
    Query,
    /// Answer it from the connection's session state (datafusion-postgres hooks:
    /// client `SET`/`SHOW`, transaction statements).
    Session,
    /// Accept it and change nothing; reply with this command tag.
    Ignore(&'static str),
    /// Refuse it with this error.
    Refuse(Refusal),
}

/// A refused statement: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn read_only(statement: &Statement) -> Self {
        Self::new(
            READ_ONLY,
            format!(
                "cannot execute {} in a read-only transaction: auditlake serve is read-only",
                command_name(statement)
            ),
        )
    }
}

impl From<Refusal> for PgWireError {
    fn from(r: Refusal) -> Self {
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_string(),
            r.code.to_string(),
            r.message,
        )))
    }
}

/// Decides what may happen to `statement`.
pub fn classify(statement: &Statement) -> Action {
    match statement {
        Statement::Query(_)
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ExplainTable { .. } => Action::Query,
        Statement::Explain { statement, .. } => match classify(statement) {
            Action::Query => Action::Query,
            Action::Refuse(r) => Action::Refuse(r),
            _ => Action::Refuse(Refusal::new(
                NOT_SUPPORTED,
                format!("EXPLAIN of {} is not supported", command_name(statement)),
            )),
        },
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Action::Session,
        Statement::Set(set) => classify_set(set),
        Statement::Reset(_) => Action::Ignore("RESET"),
        Statement::Discard { .. } => Action::Ignore("DISCARD ALL"),
        Statement::Deallocate { .. } => Action::Ignore("DEALLOCATE"),
        Statement::Savepoint { .. } => Action::Ignore("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Action::Ignore("RELEASE"),
        Statement::Copy { to, target, .. } => Action::Refuse(match (to, target) {
            (true, CopyTarget::Stdout) => Refusal::new(
                NOT_SUPPORTED,
                "COPY ... TO STDOUT is not supported by auditlake serve; use SELECT",
            ),
            (true, _) => Refusal::new(
                INSUFFICIENT_PRIVILEGE,
                "permission denied: COPY to a file or program is not allowed; auditlake serve \
                 is read-only and never writes files",
            ),
            (false, _) => Refusal::read_only(statement),
        }),
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
            Action::Refuse(Refusal::new(
                NOT_SUPPORTED,
                "cursors are not supported by auditlake serve; use LIMIT/OFFSET \
                 (or the extended protocol's row limit)",
            ))
        }
        Statement::Prepare { .. } | Statement::Execute { .. } => Action::Refuse(Refusal::new(
            NOT_SUPPORTED,
            "SQL-level PREPARE/EXECUTE is not supported; drivers' prepared statements work",
        )),
        _ => Action::Refuse(Refusal::read_only(statement)),
    }
}

fn classify_set(set: &Set) -> Action {
    let names: Vec<String> = match set {
        Set::SingleAssignment {
            scope,
            hivevar,
            variable,
            ..
        } => {
            let name = variable.to_string().to_ascii_lowercase();
            if let Some(refusal) = refuse_setting(&name) {
                return Action::Refuse(refusal);
            }
            return if scope.is_none() && !hivevar && CLIENT_SETTINGS.contains(&name.as_str()) {
                Action::Session
            } else {
                Action::Ignore("SET")
            };
        }
        Set::SetTimeZone {
            local: false,
            value,
        } => {
            let zone = value.to_string();
            let zone = zone.trim_matches('"').trim_matches('\'');
            return if super::exec::session_zone(zone).is_ok() {
                Action::Session
            } else {
                Action::Refuse(Refusal::new(
                    INVALID_PARAMETER_VALUE,
                    format!(
                        "invalid value for parameter \"TimeZone\": \"{zone}\" (a zone name \
                         such as 'Asia/Shanghai', 'UTC', or an offset such as '+08:00', \
                         east of UTC)"
                    ),
                ))
            };
        }
        Set::SetRole { .. } | Set::SetSessionAuthorization(_) => {
            return Action::Refuse(Refusal::new(
                INSUFFICIENT_PRIVILEGE,
                "permission denied to change the role or session authorization",
            ));
        }
        Set::ParenthesizedAssignments { variables, .. } => {
            variables.iter().map(|v| v.to_string()).collect()
        }
        Set::MultipleAssignments { assignments } => {
            assignments.iter().map(|a| a.name.to_string()).collect()
        }
        _ => Vec::new(),
    };
    for name in names {
        if let Some(refusal) = refuse_setting(&name.to_ascii_lowercase()) {
            return Action::Refuse(refusal);
        }
    }
    Action::Ignore("SET")
}

/// Settings that change the engine for everyone (memory, spilling, parallelism,
/// file access) or the identity: refused. Other PostgreSQL settings are accepted
/// and ignored, as drivers send many (`client_encoding`, `lc_messages`, ...).
fn refuse_setting(name: &str) -> Option<Refusal> {
    let name = name.trim_matches('"');
    if name.starts_with("datafusion.") || name == "datafusion" {
        return Some(Refusal::new(
            INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied to set parameter \"{name}\": engine settings are fixed by \
                 the server"
            ),
        ));
    }
    if matches!(name, "role" | "session_authorization") {
        return Some(Refusal::new(
            INSUFFICIENT_PRIVILEGE,
            format!("permission denied to set parameter \"{name}\""),
        ));
    }
    None
}

/// The command name PostgreSQL would print: `DROP TABLE`, `INSERT`,
/// `CREATE VIEW`, ...
pub fn command_name(statement: &Statement) -> String {
    const MODIFIERS: [&str; 10] = [
        "OR",
        "REPLACE",
        "TEMP",
        "TEMPORARY",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "EXTERNAL",
        "IF",
        "UNIQUE",
    ];
    let sql = statement.to_string();
    let mut words = sql.split_whitespace().map(str::to_ascii_uppercase);
    let Some(first) = words.next() else {
        return "this statement".to_string();
    };
    if matches!(first.as_str(), "CREATE" | "DROP" | "ALTER")
        && let Some(object) = words.find(|w| !MODIFIERS.contains(&w.as_str()))
    {
        return format!("{first} {object}");
    }
    first
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn action(sql: &str) -> Action {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        assert_eq!(statements.len(), 1, "{sql}");
        classify(&statements[0])
    }

    fn refused(sql: &str) -> Refusal {
        match action(sql) {
            Action::Refuse(r) => r,
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn queries_run() {
        for sql in [
            "SELECT 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "VALUES (1)",
            "EXPLAIN SELECT * FROM api_access",
            "EXPLAIN ANALYZE SELECT count(*) FROM api_access",
        ] {
            assert_eq!(action(sql), Action::Query, "{sql}");
        }
    }

    #[test]
    fn writes_are_refused_as_read_only() {
        for (sql, name) in [
            ("DROP TABLE api_access", "DROP TABLE"),
            ("DROP TABLE IF EXISTS api_access", "DROP TABLE"),
            ("INSERT INTO api_access (event_id) VALUES ('x')", "INSERT"),
            ("UPDATE apps SET app_id = 'x'", "UPDATE"),
            ("DELETE FROM grants", "DELETE"),
            ("CREATE TABLE t (a int)", "CREATE TABLE"),
            ("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("ALTER TABLE apps ADD COLUMN x int", "ALTER TABLE"),
            ("TRUNCATE grants", "TRUNCATE"),
            ("COPY api_access FROM '/tmp/x'", "COPY"),
            ("EXPLAIN ANALYZE DELETE FROM grants", "DELETE"),
        ] {
            let r = refused(sql);
            assert_eq!(r.code, READ_ONLY, "{sql}");
            assert!(
                r.message
                    .starts_with(&format!("cannot execute {name} in a read-only transaction")),
                "{sql}: {}",
                r.message
            );
        }
    }

    #[test]
    fn files_roles_and_engine_settings_need_privileges() {
        for sql in [
            "COPY api_access TO '/tmp/x'",
            "COPY (SELECT 1) TO PROGRAM 'sh'",
            "SET datafusion.execution.target_partitions = 64",
            "SET SESSION datafusion.runtime.memory_limit = '100G'",
            "SET ROLE postgres",
            "SET SESSION AUTHORIZATION postgres",
        ] {
            assert_eq!(refused(sql).code, INSUFFICIENT_PRIVILEGE, "{sql}");
        }
        assert_eq!(refused("COPY api_access TO STDOUT").code, NOT_SUPPORTED);
        assert_eq!(refused("DECLARE c CURSOR FOR SELECT 1").code, NOT_SUPPORTED);
    }

    #[test]
    fn driver_session_statements_are_answered() {
        for sql in [
            "SET statement_timeout = 1000",
            "SET application_name = 'psql'",
            "SET TIME ZONE 'UTC'",
            "SHOW search_path",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
        ] {
            assert_eq!(action(sql), Action::Session, "{sql}");
        }
        for sql in [
            "SET client_encoding = 'UTF8'",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "DISCARD ALL",
        ] {
            assert!(matches!(action(sql), Action::Ignore(_)), "{sql}");
        }
    }
}
