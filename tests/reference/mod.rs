//! An independent evaluator of SPEC sections 3 and 4, for tests only.
//!
//! It reads the decoded events back from the lake and evaluates every rule in
//! plain Rust, straight from the SPEC's wording, sharing nothing with the SQL
//! rules of `query/rules/` or the views of `query/src/views/`. Where the two
//! disagree one of them misreads the SPEC; the test prints the difference.
//!
//! Times are UTC microseconds. Interpretations the SPEC leaves open are the
//! ones documented in `query/README.md` (and made in the SQL): events after
//! `now` take no part; grants events at one time apply grant, revoke,
//! unsubscribe, then by event id; a request without reason is `user_request`;
//! a call without client_region or client_ip takes no part in
//! `cross_border` / `client_id_sharing`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, TimeUnit};
use auditlake_schemas::Lake;

pub const HOUR: i64 = 3_600_000_000;
pub const DAY: i64 = 24 * HOUR;

#[derive(Debug, Clone)]
pub struct Access {
    pub id: String,
    pub t: i64,
    pub app: String,
    pub dev: String,
    pub user: Option<String>,
    pub scope: Option<String>,
    pub cats: Vec<String>,
    pub status: i32,
    pub ip: Option<String>,
    pub region: Option<String>,
}

impl Access {
    /// SPEC 3: 2xx and a user named.
    pub fn is_data_access(&self) -> bool {
        (200..300).contains(&self.status) && self.user.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct GrantEv {
    pub id: String,
    pub t: i64,
    pub app: String,
    pub user: String,
    pub action: String,
    pub scopes: Vec<String>,
}

impl GrantEv {
    fn order(&self) -> (i64, u8, &str) {
        let rank = match self.action.as_str() {
            "grant" => 0,
            "revoke" => 1,
            _ => 2,
        };
        (self.t, rank, &self.id)
    }
}

#[derive(Debug, Clone)]
pub struct AppEv {
    pub id: String,
    pub t: i64,
    pub app: String,
    pub dev: Option<String>,
    pub action: String,
    pub scopes: Vec<String>,
    pub cats: Vec<String>,
    pub export: bool,
}

#[derive(Debug, Clone)]
pub struct DelEv {
    pub id: String,
    pub t: i64,
    pub app: String,
    pub user: Option<String>,
    pub kind: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Events {
    pub access: Vec<Access>,
    pub grants: Vec<GrantEv>,
    pub apps: Vec<AppEv>,
    pub dels: Vec<DelEv>,
}

/// One finding with every SPEC field (times in UTC µs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub rule_id: String,
    pub app_id: String,
    pub user_id: Option<String>,
    pub event_time: Option<i64>,
    pub window_start: Option<i64>,
    pub created_at: Option<i64>,
    pub scope: Option<String>,
    pub reason: Option<String>,
    pub event_ids: Vec<String>,
    pub window_end: Option<i64>,
    pub due_at: Option<i64>,
    pub developer_id: Option<String>,
    pub clause: String,
    pub severity: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Obligation {
    pub app_id: String,
    pub user_id: Option<String>,
    pub reason: String,
    pub created_at: i64,
    pub due_at: i64,
    pub fulfilled_at: Option<i64>,
    pub state: String,
    pub source_event_id: String,
}

fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
    c.as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

fn times(b: &RecordBatch, name: &str) -> Vec<i64> {
    let c = cast(
        b.column_by_name(name).unwrap(),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )
    .unwrap();
    c.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .values()
        .to_vec()
}

fn lists(b: &RecordBatch, name: &str) -> Vec<Vec<String>> {
    let to = DataType::List(std::sync::Arc::new(Field::new(
        "item",
        DataType::Utf8,
        true,
    )));
    let c = cast(b.column_by_name(name).unwrap(), &to).unwrap();
    let l = c.as_list::<i32>();
    (0..l.len())
        .map(|i| {
            if l.is_null(i) {
                return Vec::new();
            }
            let v = l.value(i);
            v.as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

async fn scan(lake: &Lake, sql: &str) -> Vec<RecordBatch> {
    let ctx = auditlake_query::session(lake).await.unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

/// Reads the four input tables of `lake`.
pub async fn load(lake: &Lake) -> Events {
    let mut ev = Events::default();
    for b in scan(lake, "SELECT * FROM api_access").await {
        let (id, t, app, dev, user, scope, cats) = (
            strings(&b, "event_id"),
            times(&b, "event_time"),
            strings(&b, "app_id"),
            strings(&b, "developer_id"),
            strings(&b, "user_id"),
            strings(&b, "required_scope"),
            lists(&b, "data_categories"),
        );
        let status = cast(b.column_by_name("status").unwrap(), &DataType::Int32).unwrap();
        let status = status.as_primitive::<arrow::datatypes::Int32Type>();
        let (ip, region) = (strings(&b, "client_ip"), strings(&b, "client_region"));
        for i in 0..b.num_rows() {
            ev.access.push(Access {
                id: id[i].clone().unwrap(),
                t: t[i],
                app: app[i].clone().unwrap(),
                dev: dev[i].clone().unwrap(),
                user: user[i].clone(),
                scope: scope[i].clone(),
                cats: cats[i].clone(),
                status: status.value(i),
                ip: ip[i].clone(),
                region: region[i].clone(),
            });
        }
    }
    for b in scan(lake, "SELECT * FROM grants").await {
        let (id, t, app, user, action, scopes) = (
            strings(&b, "event_id"),
            times(&b, "event_time"),
            strings(&b, "app_id"),
            strings(&b, "user_id"),
            strings(&b, "action"),
            lists(&b, "scopes"),
        );
        for i in 0..b.num_rows() {
            ev.grants.push(GrantEv {
                id: id[i].clone().unwrap(),
                t: t[i],
                app: app[i].clone().unwrap(),
                user: user[i].clone().unwrap(),
                action: action[i].clone().unwrap(),
                scopes: scopes[i].clone(),
            });
        }
    }
    for b in scan(lake, "SELECT * FROM apps").await {
        let (id, t, app, dev, action, scopes, cats) = (
            strings(&b, "event_id"),
            times(&b, "event_time"),
            strings(&b, "app_id"),
            strings(&b, "developer_id"),
            strings(&b, "action"),
            lists(&b, "declared_scopes"),
            lists(&b, "declared_categories"),
        );
        let export = b
            .column_by_name("export_approved")
            .unwrap()
            .as_boolean()
            .clone();
        for i in 0..b.num_rows() {
            ev.apps.push(AppEv {
                id: id[i].clone().unwrap(),
                t: t[i],
                app: app[i].clone().unwrap(),
                dev: dev[i].clone(),
                action: action[i].clone().unwrap(),
                scopes: scopes[i].clone(),
                cats: cats[i].clone(),
                export: export.is_valid(i) && export.value(i),
            });
        }
    }
    for b in scan(lake, "SELECT * FROM deletions").await {
        let (id, t, app, user, kind, reason) = (
            strings(&b, "event_id"),
            times(&b, "event_time"),
            strings(&b, "app_id"),
            strings(&b, "user_id"),
            strings(&b, "kind"),
            strings(&b, "reason"),
        );
        for i in 0..b.num_rows() {
            ev.dels.push(DelEv {
                id: id[i].clone().unwrap(),
                t: t[i],
                app: app[i].clone().unwrap(),
                user: user[i].clone(),
                kind: kind[i].clone().unwrap(),
                reason: reason[i].clone(),
            });
        }
    }
    ev
}

/// Evaluation settings.
pub struct Settings {
    pub now: i64,
    pub allowed_regions: Vec<String>,
    pub deadlines_h: BTreeMap<String, i64>,
    pub fallback_h: i64,
}

impl Settings {
    pub fn new(now: i64) -> Self {
        Settings {
            now,
            allowed_regions: vec!["CN".into()],
            deadlines_h: [
                ("unsubscribe", 24),
                ("revoke", 24),
                ("platform_order", 24),
                ("user_request", 72),
                ("termination", 72),
            ]
            .iter()
            .map(|(r, h)| (r.to_string(), *h))
            .collect(),
            fallback_h: 24,
        }
    }
}

/// The state of one (app, user) after each of its grants events.
struct PairHistory {
    /// Events in SPEC order with (active after, ever granted after).
    steps: Vec<(i64, BTreeSet<String>, BTreeSet<String>)>,
    grant_times: Vec<i64>,
}

impl PairHistory {
    fn at(&self, t: i64) -> (BTreeSet<String>, BTreeSet<String>) {
        match self.steps.iter().rposition(|s| s.0 <= t) {
            Some(i) => (self.steps[i].1.clone(), self.steps[i].2.clone()),
            None => (BTreeSet::new(), BTreeSet::new()),
        }
    }
    /// A grant in (after, upto].
    fn grant_between(&self, after: i64, upto: i64) -> bool {
        self.grant_times.iter().any(|&g| g > after && g <= upto)
    }
}

fn clause_of(rule: &str) -> (&'static str, &'static str) {
    match rule {
        "scope_not_granted" | "access_after_revocation" => ("6.5.1, 9.3", "high"),
        "access_after_termination" => ("10.2.2(3)", "critical"),
        "undeclared_scope" | "undeclared_category" => ("6.5.4", "medium"),
        "cross_border" => ("data-security letter", "high"),
        "client_id_sharing" => ("6.5.3, 6.9", "high"),
        "bulk_harvest" => ("6.5.2, 6.3.2", "critical"),
        "deletion_not_effective" => ("6.5.5, 6.5.6, 6.5.7", "critical"),
        "deletion_overdue" => ("6.5.5, 6.5.6, 6.5.7, 10.2.2(3)", "high"),
        "unused_scope" => ("6.5.4", "low"),
        other => panic!("unknown rule {other}"),
    }
}

fn overdue_clause(reason: &str) -> &'static str {
    match reason {
        "unsubscribe" | "revoke" => "6.5.7",
        "user_request" => "6.5.5",
        "platform_order" => "6.5.6",
        "termination" => "10.2.2(3)",
        _ => "6.5.5, 6.5.6, 6.5.7, 10.2.2(3)",
    }
}

/// Evaluates every rule and the obligations at `s.now`.
pub fn evaluate(all: &Events, s: &Settings) -> (Vec<Finding>, Vec<Obligation>) {
    let now = s.now;
    let access: Vec<&Access> = all.access.iter().filter(|a| a.t <= now).collect();
    let grants: Vec<&GrantEv> = all.grants.iter().filter(|g| g.t <= now).collect();
    let apps: Vec<&AppEv> = all.apps.iter().filter(|a| a.t <= now).collect();
    let dels: Vec<&DelEv> = all.dels.iter().filter(|d| d.t <= now).collect();

    // Grants history per (app, user), in SPEC order.
    let mut by_pair: BTreeMap<(&str, &str), Vec<&GrantEv>> = BTreeMap::new();
    for g in &grants {
        by_pair.entry((&g.app, &g.user)).or_default().push(g);
    }
    let mut revoke_sources: Vec<&GrantEv> = Vec::new();
    let mut history: HashMap<(&str, &str), PairHistory> = HashMap::new();
    for (key, evs) in by_pair.iter_mut() {
        evs.sort_by(|a, b| a.order().cmp(&b.order()));
        let mut active = BTreeSet::new();
        let mut ever = BTreeSet::new();
        let mut steps = Vec::new();
        for g in evs.iter() {
            let before = !active.is_empty();
            match g.action.as_str() {
                "grant" => {
                    for x in &g.scopes {
                        active.insert(x.clone());
                        ever.insert(x.clone());
                    }
                }
                "revoke" => {
                    for x in &g.scopes {
                        active.remove(x);
                    }
                    if before && active.is_empty() {
                        revoke_sources.push(g);
                    }
                }
                "unsubscribe" => active.clear(),
                _ => {}
            }
            steps.push((g.t, active.clone(), ever.clone()));
        }
        let grant_times = evs
            .iter()
            .filter(|g| g.action == "grant")
            .map(|g| g.t)
            .collect();
        history.insert(*key, PairHistory { steps, grant_times });
    }
    let pair_at = |app: &str, user: &str, t: i64| {
        history
            .get(&(app, user))
            .map(|h| h.at(t))
            .unwrap_or_default()
    };
    let grant_between = |app: &str, user: &str, after: i64, upto: i64| {
        history
            .get(&(app, user))
            .is_some_and(|h| h.grant_between(after, upto))
    };

    // Declarations and terminations per app.
    let mut decls: HashMap<&str, Vec<&AppEv>> = HashMap::new();
    for a in apps
        .iter()
        .filter(|a| a.action == "register" || a.action == "update")
    {
        decls.entry(&a.app).or_default().push(a);
    }
    for v in decls.values_mut() {
        v.sort_by(|a, b| (a.t, &a.id).cmp(&(b.t, &b.id)));
    }
    let declaration = |app: &str, t: i64| -> Option<&AppEv> {
        decls
            .get(app)
            .and_then(|v| v.iter().rev().find(|d| d.t <= t).copied())
    };
    let mut terminated: HashMap<&str, i64> = HashMap::new();
    for a in apps.iter().filter(|a| a.action == "terminate") {
        let e = terminated.entry(&a.app).or_insert(a.t);
        *e = (*e).min(a.t);
    }
    // Developer of an app: latest registry event naming one, else its calls.
    let mut developer: HashMap<String, String> = HashMap::new();
    for a in &access {
        let e = developer.entry(a.app.clone()).or_insert(a.dev.clone());
        if a.dev < *e {
            *e = a.dev.clone();
        }
    }
    let mut registry: Vec<&&AppEv> = apps.iter().filter(|a| a.dev.is_some()).collect();
    registry.sort_by(|a, b| (a.t, &a.id).cmp(&(b.t, &b.id)));
    for a in registry {
        developer.insert(a.app.clone(), a.dev.clone().unwrap());
    }

    let mut out: Vec<Finding> = Vec::new();
    let event = |rule: &str, a: &Access| {
        let (clause, severity) = clause_of(rule);
        Finding {
            rule_id: rule.into(),
            app_id: a.app.clone(),
            user_id: a.user.clone(),
            event_time: Some(a.t),
            window_start: None,
            created_at: None,
            scope: a.scope.clone(),
            reason: None,
            event_ids: vec![a.id.clone()],
            window_end: None,
            due_at: None,
            developer_id: Some(a.dev.clone()),
            clause: clause.into(),
            severity: severity.into(),
        }
    };

    let mut receipts: HashMap<&str, Vec<&DelEv>> = HashMap::new();
    for d in dels.iter().filter(|d| d.kind == "receipt") {
        receipts.entry(&d.app).or_default().push(d);
    }

    for a in &access {
        if a.is_data_access() {
            let user = a.user.as_deref().unwrap();
            if let Some(scope) = &a.scope {
                let (active, ever) = pair_at(&a.app, user, a.t);
                if !ever.contains(scope) {
                    out.push(event("scope_not_granted", a));
                } else if !active.contains(scope) {
                    out.push(event("access_after_revocation", a));
                }
            }
            if terminated.get(a.app.as_str()).is_some_and(|&t| a.t >= t) {
                out.push(event("access_after_termination", a));
            }
            let decl = declaration(&a.app, a.t);
            if let Some(scope) = &a.scope
                && !decl.is_some_and(|d| d.scopes.contains(scope))
            {
                out.push(event("undeclared_scope", a));
            }
            if a.cats
                .iter()
                .any(|c| !decl.is_some_and(|d| d.cats.contains(c)))
            {
                out.push(event("undeclared_category", a));
            }
            if !a.cats.is_empty()
                && a.region
                    .as_ref()
                    .is_some_and(|r| !s.allowed_regions.contains(r))
                && !decl.is_some_and(|d| d.export)
            {
                out.push(event("cross_border", a));
            }
        }
        if let Some(user) = &a.user {
            let broken = receipts.get(a.app.as_str()).into_iter().flatten().any(|r| {
                r.user.as_ref().is_none_or(|u| u == user)
                    && r.t < a.t
                    && !grant_between(&a.app, user, r.t, a.t)
            });
            if broken {
                out.push(event("deletion_not_effective", a));
            }
        }
    }

    // client_id_sharing: per (ip, hour), the developers seen.
    let hour = |t: i64| t - t.rem_euclid(HOUR);
    let mut by_ip: BTreeMap<(&str, i64), Vec<&Access>> = BTreeMap::new();
    for a in &access {
        if let Some(ip) = &a.ip {
            by_ip.entry((ip, hour(a.t))).or_default().push(a);
        }
    }
    for ((_, h), group) in &by_ip {
        let devs: BTreeSet<&str> = group.iter().map(|a| a.dev.as_str()).collect();
        if devs.len() >= 2 {
            for a in group {
                let mut f = event("client_id_sharing", a);
                f.window_start = Some(*h);
                f.window_end = Some(h + HOUR);
                out.push(f);
            }
        }
    }

    // bulk_harvest.
    let mut users_per_hour: BTreeMap<(&str, i64), BTreeSet<&str>> = BTreeMap::new();
    let mut ids_per_hour: BTreeMap<(&str, i64), Vec<String>> = BTreeMap::new();
    for a in access.iter().filter(|a| a.is_data_access()) {
        users_per_hour
            .entry((&a.app, hour(a.t)))
            .or_default()
            .insert(a.user.as_deref().unwrap());
        ids_per_hour
            .entry((&a.app, hour(a.t)))
            .or_default()
            .push(a.id.clone());
    }
    for (&(app, h), users) in &users_per_hour {
        let n = users.len() as i64;
        if n < 100 {
            continue;
        }
        let mut earlier: Vec<i64> = (1..=168)
            .map(|k| {
                users_per_hour
                    .get(&(app, h - k * HOUR))
                    .map_or(0, |u| u.len() as i64)
            })
            .collect();
        earlier.sort_unstable();
        let median_x2 = earlier[83] + earlier[84];
        if 2 * n >= 10 * median_x2 {
            let (clause, severity) = clause_of("bulk_harvest");
            let mut ids = ids_per_hour[&(app, h)].clone();
            ids.sort();
            out.push(Finding {
                rule_id: "bulk_harvest".into(),
                app_id: app.into(),
                user_id: None,
                event_time: None,
                window_start: Some(h),
                created_at: None,
                scope: None,
                reason: None,
                event_ids: ids,
                window_end: Some(h + HOUR),
                due_at: None,
                developer_id: developer.get(app).cloned(),
                clause: clause.into(),
                severity: severity.into(),
            });
        }
    }

    // Obligations.
    struct Source<'a> {
        app: &'a str,
        user: Option<&'a str>,
        reason: String,
        t: i64,
        id: &'a str,
    }
    let mut sources: Vec<Source> = Vec::new();
    for g in grants.iter().filter(|g| g.action == "unsubscribe") {
        sources.push(Source {
            app: &g.app,
            user: Some(&g.user),
            reason: "unsubscribe".into(),
            t: g.t,
            id: &g.id,
        });
    }
    for g in &revoke_sources {
        sources.push(Source {
            app: &g.app,
            user: Some(&g.user),
            reason: "revoke".into(),
            t: g.t,
            id: &g.id,
        });
    }
    for a in apps.iter().filter(|a| a.action == "terminate") {
        sources.push(Source {
            app: &a.app,
            user: None,
            reason: "termination".into(),
            t: a.t,
            id: &a.id,
        });
    }
    for d in dels.iter().filter(|d| d.kind == "request") {
        sources.push(Source {
            app: &d.app,
            user: d.user.as_deref(),
            reason: d.reason.clone().unwrap_or_else(|| "user_request".into()),
            t: d.t,
            id: &d.id,
        });
    }
    let mut first_access: HashMap<(&str, &str), i64> = HashMap::new();
    let mut first_app_access: HashMap<&str, i64> = HashMap::new();
    for a in access.iter().filter(|a| a.is_data_access()) {
        let u = a.user.as_deref().unwrap();
        let e = first_access.entry((&a.app, u)).or_insert(a.t);
        *e = (*e).min(a.t);
        let e = first_app_access.entry(&a.app).or_insert(a.t);
        *e = (*e).min(a.t);
    }
    let mut access_by_app: HashMap<&str, Vec<&Access>> = HashMap::new();
    for a in &access {
        access_by_app.entry(&a.app).or_default().push(a);
    }
    let mut obligations = Vec::new();
    for src in sources {
        let prior = match src.user {
            Some(u) => first_access.get(&(src.app, u)),
            None => first_app_access.get(src.app),
        };
        if prior.is_none_or(|&f| f >= src.t) {
            continue;
        }
        let hours = s
            .deadlines_h
            .get(&src.reason)
            .copied()
            .unwrap_or(s.fallback_h);
        let due = src.t + hours * HOUR;
        let fulfilled = receipts
            .get(src.app)
            .into_iter()
            .flatten()
            .filter(|r| r.t >= src.t && (r.user.is_none() || r.user.as_deref() == src.user))
            .map(|r| r.t)
            .min();
        let state = match fulfilled {
            Some(f) => {
                let broken = access_by_app.get(src.app).into_iter().flatten().any(|a| {
                    a.t > f
                        && a.user.as_deref().is_some_and(|u| {
                            src.user.is_none_or(|su| su == u) && !grant_between(&a.app, u, f, a.t)
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
            None if now > due => "overdue",
            None => "open",
        };
        if state == "overdue" {
            out.push(Finding {
                rule_id: "deletion_overdue".into(),
                app_id: src.app.into(),
                user_id: src.user.map(str::to_string),
                event_time: None,
                window_start: None,
                created_at: Some(src.t),
                scope: None,
                reason: Some(src.reason.clone()),
                event_ids: vec![src.id.to_string()],
                window_end: None,
                due_at: Some(due),
                developer_id: developer.get(src.app).cloned(),
                clause: overdue_clause(&src.reason).into(),
                severity: clause_of("deletion_overdue").1.into(),
            });
        }
        obligations.push(Obligation {
            app_id: src.app.into(),
            user_id: src.user.map(str::to_string),
            reason: src.reason,
            created_at: src.t,
            due_at: due,
            fulfilled_at: fulfilled,
            state: state.into(),
            source_event_id: src.id.into(),
        });
    }

    // unused_scope.
    let mut live: BTreeSet<&str> = decls.keys().copied().collect();
    live.retain(|a| !terminated.contains_key(a));
    for app in live {
        let Some(decl) = declaration(app, now) else {
            continue;
        };
        // Each scope the app holds, with the events that give it: the
        // declaration in force, and every user's grant still in force (the
        // last grant naming the scope after any revoke or unsubscribe).
        let mut scopes: BTreeMap<String, BTreeSet<String>> = decl
            .scopes
            .iter()
            .map(|x| (x.clone(), BTreeSet::from([decl.id.clone()])))
            .collect();
        for (&(a, u), evs) in by_pair.iter().filter(|((a, _), _)| *a == app) {
            let active = pair_at(a, u, now).0;
            let mut last_grant: BTreeMap<&str, &str> = BTreeMap::new();
            for g in evs.iter() {
                match g.action.as_str() {
                    "grant" => {
                        for x in &g.scopes {
                            last_grant.insert(x, &g.id);
                        }
                    }
                    "revoke" => {
                        for x in &g.scopes {
                            last_grant.remove(x.as_str());
                        }
                    }
                    "unsubscribe" => last_grant.clear(),
                    _ => {}
                }
            }
            for x in active {
                let ids = scopes.entry(x.clone()).or_default();
                if let Some(id) = last_grant.get(x.as_str()) {
                    ids.insert(id.to_string());
                }
            }
        }
        for (scope, ids) in scopes {
            let used = access_by_app.get(app).into_iter().flatten().any(|a| {
                a.is_data_access()
                    && a.scope.as_deref() == Some(scope.as_str())
                    && a.t >= now - 30 * DAY
            });
            if !used {
                let (clause, severity) = clause_of("unused_scope");
                out.push(Finding {
                    rule_id: "unused_scope".into(),
                    app_id: app.into(),
                    user_id: None,
                    event_time: None,
                    window_start: Some(now - 30 * DAY),
                    created_at: None,
                    scope: Some(scope),
                    reason: None,
                    event_ids: ids.into_iter().collect(),
                    window_end: Some(now),
                    due_at: None,
                    developer_id: developer.get(app).cloned(),
                    clause: clause.into(),
                    severity: severity.into(),
                });
            }
        }
    }
    out.sort();
    obligations.sort();
    (out, obligations)
}
