//! A brute-force evaluator of SPEC sections 3 and 4 over the four JSON-lines
//! topics: the oracle that `planted.json` is checked against. It shares no
//! code with the simulator; it is slow (quadratic in places) and written to
//! read like the SPEC, for test-sized data.
//!
//! It also decodes like the ingester: blank lines skipped, malformed lines
//! (not JSON, not an object, a missing required field, a wrong type, a time
//! without offset) quarantined, duplicates (same `event_id`) kept once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::Context;
use chrono::DateTime;
use serde_json::{Map, Value};

use super::fmt::{DAY, HOUR, time_string};
use super::out::Topic;

/// Line counts of one topic as the ingester would see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub blank: u64,
    pub malformed: u64,
    /// Well-formed lines whose event_id was seen before.
    pub duplicates: u64,
    /// Distinct well-formed events.
    pub events: u64,
}

/// One finding, keyed like [`crate::r#gen::PlantedFinding::key`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefFinding {
    pub rule_id: &'static str,
    pub app_id: String,
    pub user_id: Option<String>,
    pub event_ids: Vec<String>,
    pub scope: Option<String>,
    pub window_start: Option<String>,
}

impl RefFinding {
    pub fn key(&self) -> String {
        finding_key(
            self.rule_id,
            &self.app_id,
            self.user_id.as_deref(),
            &self.event_ids,
            self.scope.as_deref(),
            self.window_start.as_deref(),
        )
    }
}

/// The identity of a finding, for comparing two evaluations: event-level
/// rules by event, `bulk_harvest` by app and hour, `unused_scope` by app and
/// scope, `deletion_overdue` by the obligation's source event.
pub fn finding_key(
    rule: &str,
    app: &str,
    user: Option<&str>,
    event_ids: &[String],
    scope: Option<&str>,
    window_start: Option<&str>,
) -> String {
    match rule {
        "bulk_harvest" => format!("{rule}|{app}|{}", window_start.unwrap_or("")),
        "unused_scope" => format!("{rule}|{app}|{}", scope.unwrap_or("")),
        "deletion_overdue" => format!(
            "{rule}|{app}|{}|{}",
            user.unwrap_or("*"),
            event_ids.first().map_or("", |s| s)
        ),
        _ => format!("{rule}|{}", event_ids.first().map_or("", |s| s)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefObligation {
    pub app_id: String,
    pub user_id: Option<String>,
    pub reason: String,
    pub created_at: String,
    pub due_at: String,
    pub fulfilled_at: Option<String>,
    pub state: &'static str,
    pub source_event_id: String,
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Per topic, in [`Topic::index`] order.
    pub stats: [DecodeStats; 4],
    pub findings: Vec<RefFinding>,
    pub obligations: Vec<RefObligation>,
}

#[derive(Debug, Clone)]
struct Access {
    id: String,
    t: i64,
    app: String,
    dev: String,
    user: Option<String>,
    scope: Option<String>,
    cats: Vec<String>,
    status: i64,
    ip: String,
    region: String,
}

impl Access {
    fn data(&self) -> bool {
        (200..300).contains(&self.status) && self.user.is_some()
    }
}

#[derive(Debug, Clone)]
struct Grant {
    t: i64,
    app: String,
    user: String,
    action: String,
    scopes: Vec<String>,
    id: String,
}

impl Grant {
    fn rank(&self) -> u8 {
        match self.action.as_str() {
            "grant" => 0,
            "revoke" => 1,
            _ => 2,
        }
    }
}

#[derive(Debug, Clone)]
struct AppEv {
    t: i64,
    app: String,
    action: String,
    declared: Vec<String>,
    cats: Vec<String>,
    export: bool,
    id: String,
}

#[derive(Debug, Clone)]
struct Deletion {
    t: i64,
    app: String,
    user: Option<String>,
    kind: String,
    reason: String,
    id: String,
}

fn time(v: &Value) -> Option<i64> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn req_str(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k)?.as_str().map(str::to_string)
}

/// Optional string: absent or null is `Some(None)`, another type is `None`.
fn opt_str(o: &Map<String, Value>, k: &str) -> Option<Option<String>> {
    match o.get(k) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        _ => None,
    }
}

fn opt_list(o: &Map<String, Value>, k: &str) -> Option<Vec<String>> {
    match o.get(k) {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(a)) => a.iter().map(|v| v.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

fn opt_int(o: &Map<String, Value>, k: &str) -> Option<()> {
    match o.get(k) {
        None | Some(Value::Null) => Some(()),
        Some(v) if v.is_i64() => Some(()),
        _ => None,
    }
}

/// Decodes one topic's lines; returns the distinct well-formed objects.
fn decode(bytes: &[u8], stats: &mut DecodeStats) -> Vec<Map<String, Value>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(o)) => {
                let Some(id) = o
                    .get("event_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                else {
                    stats.malformed += 1;
                    continue;
                };
                if seen.contains(&id) {
                    stats.duplicates += 1;
                    continue;
                }
                seen.insert(id);
                out.push(o);
            }
            _ => stats.malformed += 1,
        }
    }
    out
}

/// Evaluates the four `*.jsonl` files of a `gen` output directory at `now` (RFC 3339).
pub fn evaluate_dir(dir: &Path, now: &str) -> anyhow::Result<Evaluation> {
    let mut topics: Vec<Vec<u8>> = Vec::new();
    for t in Topic::ALL {
        let path = dir.join(t.file_name());
        topics.push(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    let now = DateTime::parse_from_rfc3339(now)
        .context("now")?
        .timestamp_millis();
    Ok(evaluate(
        [&topics[0], &topics[1], &topics[2], &topics[3]],
        now,
    ))
}

/// Evaluates the topics' file contents (in [`Topic::index`] order) at `now` (UTC ms).
pub fn evaluate(files: [&[u8]; 4], now: i64) -> Evaluation {
    let mut stats = [DecodeStats::default(); 4];
    let mut accesses = Vec::new();
    let mut grants = Vec::new();
    let mut apps = Vec::new();
    let mut dels = Vec::new();
    for topic in Topic::ALL {
        let st = &mut stats[topic.index()];
        for o in decode(files[topic.index()], st) {
            match parse(topic, &o) {
                Some(Parsed::Access(a)) => accesses.push(a),
                Some(Parsed::Grant(g)) => grants.push(g),
                Some(Parsed::App(a)) => apps.push(a),
                Some(Parsed::Deletion(d)) => dels.push(d),
                None => {
                    st.malformed += 1;
                    continue;
                }
            }
            st.events += 1;
        }
    }
    let mut by_pair: HashMap<(String, String), Vec<usize>> = HashMap::new();
    for (i, g) in grants.iter().enumerate() {
        by_pair
            .entry((g.app.clone(), g.user.clone()))
            .or_default()
            .push(i);
    }
    let r = Ref {
        accesses,
        grants,
        apps,
        dels,
        now,
        by_pair,
    };
    let (findings, obligations) = r.run();
    Evaluation {
        stats,
        findings,
        obligations,
    }
}

enum Parsed {
    Access(Access),
    Grant(Grant),
    App(AppEv),
    Deletion(Deletion),
}

/// Whether the ingester accepts `line` as an event of `topic` (SPEC section 2).
pub fn is_well_formed(topic: Topic, line: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(o)) => parse(topic, &o).is_some(),
        _ => false,
    }
}

/// One well-formed event of `topic`, or `None` for a message to quarantine.
fn parse(topic: Topic, o: &Map<String, Value>) -> Option<Parsed> {
    let id = req_str(o, "event_id")?;
    let t = time(o.get("event_time")?)?;
    let app = req_str(o, "app_id")?;
    Some(match topic {
        Topic::ApiAccess => {
            req_str(o, "api")?;
            opt_list(o, "token_scopes")?;
            opt_int(o, "record_count")?;
            opt_int(o, "latency_ms")?;
            opt_int(o, "response_bytes")?;
            opt_str(o, "token_id")?;
            Parsed::Access(Access {
                id,
                t,
                app,
                dev: req_str(o, "developer_id")?,
                user: opt_str(o, "user_id")?,
                scope: opt_str(o, "required_scope")?,
                cats: opt_list(o, "data_categories")?,
                status: o.get("status")?.as_i64()?,
                ip: opt_str(o, "client_ip")?.unwrap_or_default(),
                region: opt_str(o, "client_region")?.unwrap_or_default(),
            })
        }
        Topic::Grants => Parsed::Grant(Grant {
            t,
            app,
            user: req_str(o, "user_id")?,
            action: req_str(o, "action")?,
            scopes: opt_list(o, "scopes")?,
            id,
        }),
        Topic::Apps => {
            opt_str(o, "developer_id")?;
            opt_str(o, "app_kind")?;
            Parsed::App(AppEv {
                t,
                app,
                action: req_str(o, "action")?,
                declared: opt_list(o, "declared_scopes")?,
                cats: opt_list(o, "declared_categories")?,
                export: match o.get("export_approved") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    _ => return None,
                },
                id,
            })
        }
        Topic::Deletions => Parsed::Deletion(Deletion {
            t,
            app,
            user: opt_str(o, "user_id")?,
            kind: req_str(o, "kind")?,
            reason: opt_str(o, "reason")?.unwrap_or_default(),
            id,
        }),
    })
}

struct Ref {
    accesses: Vec<Access>,
    grants: Vec<Grant>,
    apps: Vec<AppEv>,
    dels: Vec<Deletion>,
    now: i64,
    by_pair: HashMap<(String, String), Vec<usize>>,
}

fn deadline(reason: &str) -> i64 {
    match reason {
        "user_request" | "termination" => 72 * HOUR,
        _ => 24 * HOUR,
    }
}

fn hour_of(t: i64) -> i64 {
    t - t.rem_euclid(HOUR)
}

impl Ref {
    /// Grants of (app, user) in SPEC application order.
    fn pair_grants(&self, app: &str, user: &str) -> Vec<&Grant> {
        let mut v: Vec<&Grant> = self.of_pair(app, user).collect();
        v.sort_by_key(|g| (g.t, g.rank()));
        v
    }

    fn active(&self, app: &str, user: &str, t: i64) -> BTreeSet<String> {
        let mut s = BTreeSet::new();
        for g in self.pair_grants(app, user).into_iter().filter(|g| g.t <= t) {
            match g.action.as_str() {
                "grant" => s.extend(g.scopes.iter().cloned()),
                "revoke" => {
                    for x in &g.scopes {
                        s.remove(x);
                    }
                }
                _ => s.clear(),
            }
        }
        s
    }

    fn of_pair<'s>(&'s self, app: &str, user: &str) -> impl Iterator<Item = &'s Grant> + 's {
        self.by_pair
            .get(&(app.to_string(), user.to_string()))
            .into_iter()
            .flatten()
            .map(|&i| &self.grants[i])
    }

    fn ever(&self, app: &str, user: &str, scope: &str, t: i64) -> bool {
        self.of_pair(app, user)
            .any(|g| g.action == "grant" && g.t <= t && g.scopes.iter().any(|s| s == scope))
    }

    fn declaration(&self, app: &str, t: i64) -> Option<&AppEv> {
        self.apps
            .iter()
            .filter(|a| {
                a.app == app && a.t <= t && (a.action == "register" || a.action == "update")
            })
            .max_by_key(|a| a.t)
    }

    fn terminated(&self, app: &str, t: i64) -> bool {
        self.apps
            .iter()
            .any(|a| a.app == app && a.action == "terminate" && a.t <= t)
    }

    fn grant_between(&self, app: &str, user: &str, after: i64, upto: i64) -> bool {
        self.of_pair(app, user)
            .any(|g| g.action == "grant" && g.t > after && g.t <= upto)
    }

    fn run(&self) -> (Vec<RefFinding>, Vec<RefObligation>) {
        let mut out = Vec::new();
        let ev = |rule: &'static str, a: &Access, scope: Option<String>| RefFinding {
            rule_id: rule,
            app_id: a.app.clone(),
            user_id: a.user.clone(),
            event_ids: vec![a.id.clone()],
            scope,
            window_start: None,
        };
        // Receipts per app.
        let mut receipts: HashMap<&str, Vec<&Deletion>> = HashMap::new();
        for d in self.dels.iter().filter(|d| d.kind == "receipt") {
            receipts.entry(&d.app).or_default().push(d);
        }

        for a in &self.accesses {
            if a.data() {
                let user = a.user.as_deref().expect("data access");
                if let Some(scope) = &a.scope {
                    if !self.ever(&a.app, user, scope, a.t) {
                        out.push(ev("scope_not_granted", a, Some(scope.clone())));
                    } else if !self.active(&a.app, user, a.t).contains(scope) {
                        out.push(ev("access_after_revocation", a, Some(scope.clone())));
                    }
                }
                if self.terminated(&a.app, a.t) {
                    out.push(ev("access_after_termination", a, None));
                }
                let decl = self.declaration(&a.app, a.t);
                if let Some(scope) = &a.scope
                    && !decl.is_some_and(|d| d.declared.contains(scope))
                {
                    out.push(ev("undeclared_scope", a, Some(scope.clone())));
                }
                if a.cats
                    .iter()
                    .any(|c| !decl.is_some_and(|d| d.cats.contains(c)))
                {
                    out.push(ev("undeclared_category", a, None));
                }
                if !a.cats.is_empty() && a.region != "CN" && !decl.is_some_and(|d| d.export) {
                    out.push(ev("cross_border", a, None));
                }
            }
            if let Some(user) = &a.user {
                let after_receipt = receipts.get(a.app.as_str()).into_iter().flatten().any(|r| {
                    (r.user.is_none() || r.user.as_ref() == Some(user))
                        && r.t < a.t
                        && !self.grant_between(&a.app, user, r.t, a.t)
                });
                if after_receipt {
                    out.push(ev("deletion_not_effective", a, None));
                }
            }
        }

        // client_id_sharing.
        let mut groups: BTreeMap<(&str, i64), Vec<&Access>> = BTreeMap::new();
        for a in &self.accesses {
            groups.entry((&a.ip, hour_of(a.t))).or_default().push(a);
        }
        for g in groups.values() {
            let devs: BTreeSet<&str> = g.iter().map(|a| a.dev.as_str()).collect();
            if devs.len() >= 2 {
                for a in g {
                    out.push(ev("client_id_sharing", a, None));
                }
            }
        }

        // bulk_harvest.
        let mut users: BTreeMap<(&str, i64), BTreeSet<&str>> = BTreeMap::new();
        for a in self.accesses.iter().filter(|a| a.data()) {
            users
                .entry((&a.app, hour_of(a.t)))
                .or_default()
                .insert(a.user.as_deref().expect("data"));
        }
        for (&(app, h), us) in &users {
            let c = us.len();
            if c < 100 {
                continue;
            }
            let mut prev: Vec<usize> = (1..=168)
                .map(|k| users.get(&(app, h - k * HOUR)).map_or(0, BTreeSet::len))
                .collect();
            prev.sort_unstable();
            let median2 = prev[83] + prev[84]; // twice the median
            if 2 * c >= 10 * median2 {
                let ids = self
                    .accesses
                    .iter()
                    .filter(|a| a.data() && a.app == app && hour_of(a.t) == h)
                    .map(|a| a.id.clone())
                    .collect();
                out.push(RefFinding {
                    rule_id: "bulk_harvest",
                    app_id: app.to_string(),
                    user_id: None,
                    event_ids: ids,
                    scope: None,
                    window_start: Some(time_string(h)),
                });
            }
        }

        // Obligations.
        struct Src<'a> {
            t: i64,
            app: &'a str,
            user: Option<&'a str>,
            reason: &'a str,
            id: &'a str,
        }
        let mut srcs: Vec<Src> = Vec::new();
        let mut pairs: BTreeSet<(&str, &str)> = BTreeSet::new();
        for g in &self.grants {
            pairs.insert((&g.app, &g.user));
        }
        for &(app, user) in &pairs {
            let mut s: BTreeSet<&str> = BTreeSet::new();
            for g in self.pair_grants(app, user) {
                match g.action.as_str() {
                    "grant" => s.extend(g.scopes.iter().map(String::as_str)),
                    "revoke" => {
                        let before = !s.is_empty();
                        for x in &g.scopes {
                            s.remove(x.as_str());
                        }
                        if before && s.is_empty() {
                            srcs.push(Src {
                                t: g.t,
                                app,
                                user: Some(user),
                                reason: "revoke",
                                id: &g.id,
                            });
                        }
                    }
                    _ => {
                        s.clear();
                        srcs.push(Src {
                            t: g.t,
                            app,
                            user: Some(user),
                            reason: "unsubscribe",
                            id: &g.id,
                        });
                    }
                }
            }
        }
        for a in self.apps.iter().filter(|a| a.action == "terminate") {
            srcs.push(Src {
                t: a.t,
                app: &a.app,
                user: None,
                reason: "termination",
                id: &a.id,
            });
        }
        for d in self.dels.iter().filter(|d| d.kind == "request") {
            srcs.push(Src {
                t: d.t,
                app: &d.app,
                user: d.user.as_deref(),
                reason: &d.reason,
                id: &d.id,
            });
        }
        let mut obligations = Vec::new();
        for s in srcs {
            let accessed = self.accesses.iter().any(|a| {
                a.data()
                    && a.app == s.app
                    && a.t < s.t
                    && (s.user.is_none() || a.user.as_deref() == s.user)
            });
            if !accessed {
                continue;
            }
            let due = s.t + deadline(s.reason);
            let fulfilled = receipts
                .get(s.app)
                .into_iter()
                .flatten()
                .filter(|r| {
                    r.t >= s.t
                        && r.t <= self.now
                        && (r.user.is_none() || r.user.as_deref() == s.user)
                })
                .map(|r| r.t)
                .min();
            let state = match fulfilled {
                Some(f) => {
                    let broken = self.accesses.iter().any(|a| {
                        a.app == s.app
                            && a.t > f
                            && a.t <= self.now
                            && a.user.as_deref().is_some_and(|u| {
                                (s.user.is_none() || Some(u) == s.user)
                                    && !self.grant_between(&a.app, u, f, a.t)
                            })
                    });
                    if broken {
                        "not_effective"
                    } else if f <= due {
                        "fulfilled"
                    } else {
                        "fulfilled_late"
                    }
                }
                None if self.now > due => "overdue",
                None => "open",
            };
            if state == "overdue" {
                out.push(RefFinding {
                    rule_id: "deletion_overdue",
                    app_id: s.app.to_string(),
                    user_id: s.user.map(str::to_string),
                    event_ids: vec![s.id.to_string()],
                    scope: None,
                    window_start: None,
                });
            }
            obligations.push(RefObligation {
                app_id: s.app.to_string(),
                user_id: s.user.map(str::to_string),
                reason: s.reason.to_string(),
                created_at: time_string(s.t),
                due_at: time_string(due),
                fulfilled_at: fulfilled.map(time_string),
                state,
                source_event_id: s.id.to_string(),
            });
        }

        // unused_scope.
        let mut app_ids: BTreeSet<&str> = self.apps.iter().map(|a| a.app.as_str()).collect();
        app_ids.retain(|a| !self.terminated(a, self.now));
        for app in app_ids {
            let Some(decl) = self.declaration(app, self.now) else {
                continue;
            };
            let mut cand: BTreeSet<String> = decl.declared.iter().cloned().collect();
            for &(a, u) in &pairs {
                if a == app {
                    cand.extend(self.active(a, u, self.now));
                }
            }
            for scope in cand {
                let used = self.accesses.iter().any(|a| {
                    a.data()
                        && a.app == app
                        && a.scope.as_deref() == Some(scope.as_str())
                        && a.t >= self.now - 30 * DAY
                        && a.t <= self.now
                });
                if !used {
                    out.push(RefFinding {
                        rule_id: "unused_scope",
                        app_id: app.to_string(),
                        user_id: None,
                        event_ids: Vec::new(),
                        scope: Some(scope),
                        window_start: None,
                    });
                }
            }
        }
        out.sort();
        obligations.sort();
        (out, obligations)
    }
}
