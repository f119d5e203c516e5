//! The simulator: applies planned events and draws normal API traffic in one
//! time-ordered pass, writes every line, and derives the truth (planted
//! findings and obligations) from the state it keeps.
//!
//! ```text
//! planned events (sorted by time, tie rank) ──┐
//!                                             ├─> apply / draw ─> TopicWriter x4 ─> GenSink
//! normal access times (sorted, odd ms) ───────┘          │
//!                                                        └─> state ─> findings, obligations
//! ```
//!
//! Normal accesses are drawn at odd milliseconds and planned events sit on
//! even ones, so normal traffic never ties with a grant, a receipt or an app
//! update: the state it sees is unambiguous. Normal traffic only reads a user
//! who has an active scope that the app declares, only APIs whose categories
//! are declared, from CN (or abroad for export-approved apps, or without
//! personal data), from its developer's own IPs, never after a receipt
//! without a new grant, and with at most `SESSION_CAP` distinct users per
//! app-hour; so it breaks no rule, and every finding comes from the script
//! (except `unused_scope`, derived here exactly from the final state).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::{bail, ensure};

use super::fmt::{self, DAY, HOUR, MIN, TimeFmt, time_string};
use super::model::*;
use super::out::{GenSink, Insert, Topic, TopicStats, TopicWriter};
use super::plan::*;
use super::rng::{Rng, hash};
use super::{ExpectedClean, PlantedFinding, PlantedObligation};

/// Hours looked back by `bulk_harvest`'s median.
const HARVEST_LOOKBACK_HOURS: i64 = 168;
/// `unused_scope` window.
const UNUSED_WINDOW: i64 = 30 * DAY;
/// Relative traffic by UTC hour: platform users are in UTC+8.
const HOUR_WEIGHTS: [u64; 24] = [
    60, 80, 90, 90, 85, 75, 80, 90, 95, 90, 80, 70, 60, 45, 35, 25, 15, 10, 8, 8, 10, 18, 30, 45,
];
/// HTTP statuses of normal calls, per 10 000.
const STATUSES: [(u16, u32); 8] = [
    (200, 9620),
    (401, 80),
    (403, 100),
    (404, 60),
    (429, 40),
    (500, 50),
    (502, 30),
    (503, 20),
];

pub struct Outcome {
    pub stats: [TopicStats; 4],
    pub findings: Vec<PlantedFinding>,
    pub obligations: Vec<PlantedObligation>,
    pub clean: Vec<ExpectedClean>,
}

struct AppState {
    registered: bool,
    terminated_at: i64,
    declared: u16,
    cats: u16,
    export: bool,
    last_receipt_all: i64,
    first_access: i64,
    scope_last_used: [i64; 8],
    /// Normal traffic's APIs: scope declared and used by the profile, categories declared.
    usable: Vec<u8>,
    usable_scopes: u16,
    session_hour: i64,
    members: Vec<u32>,
    seen: Vec<bool>,
    hour_counts: Vec<u16>,
    watched: bool,
}

struct ObSource {
    time: i64,
    app: u32,
    user: Option<u32>,
    pair: Option<u32>,
    reason: Reason,
    id: EventId,
    meta: MetaId,
}

struct Receipt {
    time: i64,
    app: u32,
    user: Option<u32>,
}

struct ScriptedAccess {
    id: EventId,
    time: i64,
    app: u32,
    user: Option<u32>,
    ip: Box<str>,
    scope: Option<u8>,
    rules: u16,
    meta: MetaId,
    last_grant: i64,
}

/// JSON fragments precomputed per scope mask / category mask.
struct Lists {
    scopes: Vec<Vec<u8>>,
    cats: Vec<Vec<u8>>,
}

fn json_list(names: &[&str], mask: u16) -> Vec<u8> {
    let items: Vec<String> = (0..names.len())
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| format!("\"{}\"", names[i]))
        .collect();
    format!("[{}]", items.join(",")).into_bytes()
}

impl Lists {
    fn new() -> Self {
        Self {
            scopes: (0..256u16).map(|m| json_list(&SCOPES, m)).collect(),
            cats: (0..256u16).map(|m| json_list(&CATEGORIES, m)).collect(),
        }
    }
}

pub fn floor_hour(t: i64) -> i64 {
    t - t.rem_euclid(HOUR)
}

pub struct Sim<'a> {
    w: &'a World,
    seed: u64,
    metas: &'a [Meta],
    apps: Vec<AppState>,
    pairs: Vec<PairState>,
    pair_index: &'a HashMap<(u32, u32), u32>,
    base_start: &'a [u32],
    writers: Vec<TopicWriter>,
    buf: Vec<u8>,
    tf: TimeFmt,
    lists: Lists,
    rng: Rng,
    ids: Ids,
    live: Vec<(f64, u32)>,
    hour0: i64,
    group: Vec<(u32, Topic, u32, Vec<u8>)>,
    // Truth bookkeeping.
    sources: Vec<ObSource>,
    receipts: Vec<Receipt>,
    scripted: Vec<ScriptedAccess>,
    script_hour_users: HashMap<(u32, i64), HashSet<u32>>,
    watch: HashMap<(u32, i64), Vec<EventId>>,
    meta_events: Vec<Option<(Topic, EventId)>>,
    harvest_plan: &'a [(u32, i64)],
}

impl<'a> Sim<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        w: &'a World,
        seed: u64,
        metas: &'a [Meta],
        harvest_plan: &'a [(u32, i64)],
        pairs: &'a Pairs,
        evs: &[Ev],
        ids: Ids,
        natural_events: u64,
        dup_rate: f64,
        malformed: u32,
    ) -> Self {
        let hour0 = floor_hour(w.start);
        let n_hours = ((w.end - hour0 + HOUR - 1) / HOUR) as usize + 1;
        let apps = w
            .apps
            .iter()
            .map(|_| AppState {
                registered: false,
                terminated_at: i64::MAX,
                declared: 0,
                cats: 0,
                export: false,
                last_receipt_all: NEVER,
                first_access: i64::MAX,
                scope_last_used: [NEVER; 8],
                usable: Vec::new(),
                usable_scopes: 0,
                session_hour: NEVER,
                members: Vec::new(),
                seen: Vec::new(),
                hour_counts: vec![0; n_hours],
                watched: false,
            })
            .collect();
        let mut sim = Sim {
            w,
            seed,
            metas,
            apps,
            pairs: pairs.states.clone(),
            pair_index: &pairs.index,
            base_start: &pairs.base_start,
            writers: Vec::new(),
            buf: Vec::with_capacity(1024),
            tf: TimeFmt::default(),
            lists: Lists::new(),
            rng: Rng::new(seed, 5),
            ids,
            live: Vec::new(),
            hour0,
            group: Vec::new(),
            sources: Vec::new(),
            receipts: Vec::new(),
            scripted: Vec::new(),
            script_hour_users: HashMap::new(),
            watch: HashMap::new(),
            meta_events: vec![None; metas.len()],
            harvest_plan,
        };
        // Watch the app-hours where planted accesses alone come near the
        // bulk_harvest floor, to list every data access there as evidence.
        let mut per_hour: HashMap<(u32, i64), HashSet<u32>> = HashMap::new();
        for ev in evs {
            if let EvKind::Access {
                app,
                user: Some(u),
                status,
                ..
            } = &ev.kind
                && (200..300).contains(status)
            {
                per_hour
                    .entry((*app, floor_hour(ev.time)))
                    .or_default()
                    .insert(*u);
            }
        }
        for (k, users) in per_hour {
            if users.len() >= 50 {
                sim.watch.insert(k, Vec::new());
                sim.apps[k.0 as usize].watched = true;
            }
        }
        // Writers, with malformed and blank lines placed among the events.
        let mut totals = [0u64; 4];
        totals[Topic::ApiAccess.index()] = natural_events;
        for ev in evs {
            totals[ev.topic().index()] += 1;
        }
        let mut mrng = Rng::new(seed, 6);
        for topic in Topic::ALL {
            let total = totals[topic.index()];
            let mut inserts = Vec::new();
            for (key, line) in sim.malformed_lines(topic, malformed, &mut mrng) {
                inserts.push(Insert {
                    at: mrng.below(total + 1),
                    line: Some(line),
                    key,
                });
            }
            for _ in 0..2 {
                inserts.push(Insert {
                    at: 1 + mrng.below(total.max(1)),
                    line: None,
                    key: String::new(),
                });
            }
            sim.writers.push(TopicWriter::new(
                topic,
                dup_rate,
                Rng::new(seed, 10 + topic.index() as u64),
                inserts,
            ));
        }
        sim
    }

    // ---------------------------------------------------------------- running

    /// Runs the whole period. `evs` must be sorted by (time, rank, seq).
    pub fn run(
        mut self,
        evs: &[Ev],
        natural_events: u64,
        sink: &mut dyn GenSink,
    ) -> anyhow::Result<Outcome> {
        let w = self.w;
        // Normal access counts per clock hour, by largest remainder.
        let first = w.start + 10 * MIN;
        let mut slots: Vec<(i64, i64, u64)> = Vec::new();
        let mut h = self.hour0;
        while h < w.end {
            let a = h.max(first);
            let b = (h + HOUR).min(w.end);
            if b > a {
                let utc_hour = (h.rem_euclid(DAY) / HOUR) as usize;
                slots.push((a, b, HOUR_WEIGHTS[utc_hour] * (b - a) as u64));
            }
            h += HOUR;
        }
        let total_w: u128 = slots.iter().map(|s| u128::from(s.2)).sum();
        let n = u128::from(natural_events);
        let mut counts: Vec<u64> = slots
            .iter()
            .map(|s| (n * u128::from(s.2) / total_w) as u64)
            .collect();
        let mut rest = natural_events - counts.iter().sum::<u64>();
        let mut order: Vec<(u128, usize)> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| ((n * u128::from(s.2)) % total_w, i))
            .collect();
        order.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        for (_, i) in order {
            if rest == 0 {
                break;
            }
            counts[i] += 1;
            rest -= 1;
        }

        let mut trng = Rng::new(self.seed, 7);
        let mut ci = 0usize;
        let mut times: Vec<i64> = Vec::new();
        for (slot, &count) in slots.iter().zip(&counts) {
            let (a, b, _) = *slot;
            let span = ((b - a) / 2) as u64;
            times.clear();
            times.extend((0..count).map(|_| a + 2 * trng.below(span) as i64 + 1));
            times.sort_unstable();
            for &t in &times {
                while ci < evs.len() && evs[ci].time < t {
                    ci = self.apply_group(evs, ci, sink)?;
                }
                self.natural_access(t, sink)?;
            }
        }
        while ci < evs.len() {
            ci = self.apply_group(evs, ci, sink)?;
        }
        let mut stats = [TopicStats::default(); 4];
        for (i, wr) in self.writers.iter_mut().enumerate() {
            stats[i] = wr.finish(sink)?;
        }
        for a in 0..self.apps.len() {
            self.flush_session(a);
        }
        self.truth(stats)
    }

    /// Applies all events at one time (in tie order) and writes their lines
    /// in creation order. Returns the index after the group.
    fn apply_group(
        &mut self,
        evs: &[Ev],
        start: usize,
        sink: &mut dyn GenSink,
    ) -> anyhow::Result<usize> {
        let t = evs[start].time;
        let mut end = start;
        while end < evs.len() && evs[end].time == t {
            end += 1;
        }
        let mut group = std::mem::take(&mut self.group);
        group.clear();
        for ev in &evs[start..end] {
            let app = self.apply(ev)?;
            group.push((ev.seq, ev.topic(), app, self.buf.clone()));
        }
        group.sort_by_key(|g| g.0);
        for (_, topic, app, line) in &group {
            self.writers[topic.index()].event(sink, &self.w.apps[*app as usize].id, line)?;
        }
        self.group = group;
        Ok(end)
    }

    fn rebuild_live(&mut self) {
        self.live.clear();
        let mut acc = 0.0;
        for (i, st) in self.apps.iter().enumerate() {
            let wgt = self.w.apps[i].weight;
            if st.registered && st.terminated_at == i64::MAX && wgt > 0.0 {
                acc += wgt;
                self.live.push((acc, i as u32));
            }
        }
    }

    fn set_declaration(&mut self, a: usize, declared: u16, cats: u16, export: bool) {
        let used = self.w.apps[a].profile.used;
        let st = &mut self.apps[a];
        st.declared = declared;
        st.cats = cats;
        st.export = export;
        st.usable = (0..A_FIRST_APP_LEVEL)
            .filter(|&i| {
                let api = &APIS[i as usize];
                let bit = 1u16 << api.scope.expect("user API");
                declared & used & bit != 0 && api.cats & !cats == 0
            })
            .collect();
        st.usable_scopes = st.usable.iter().fold(0, |m, &i| {
            m | 1 << APIS[i as usize].scope.expect("user API")
        });
    }

    /// Applies one planned event and formats its line into `self.buf`.
    /// Returns its app index (the line's key).
    fn apply(&mut self, ev: &Ev) -> anyhow::Result<u32> {
        let t = ev.time;
        if ev.meta != NO_META {
            self.meta_events[ev.meta as usize] = Some((ev.topic(), ev.id));
        }
        match &ev.kind {
            EvKind::App {
                app,
                action,
                declared,
                cats,
                export,
            } => {
                let a = *app as usize;
                match action {
                    AppAction::Register | AppAction::Update => {
                        self.set_declaration(a, *declared, *cats, *export);
                        self.apps[a].registered = true;
                        self.rebuild_live();
                    }
                    AppAction::Terminate => {
                        self.apps[a].terminated_at = t;
                        self.rebuild_live();
                        self.sources.push(ObSource {
                            time: t,
                            app: *app,
                            user: None,
                            pair: None,
                            reason: Reason::Termination,
                            id: ev.id,
                            meta: ev.meta,
                        });
                    }
                }
                self.write_app(ev, a, *action, *declared, *cats, *export);
                Ok(*app)
            }
            EvKind::Grant {
                pair,
                action,
                scopes,
            } => {
                let p = &mut self.pairs[*pair as usize];
                match action {
                    GrantAction::Grant => {
                        p.active |= scopes;
                        p.ever |= scopes;
                        p.last_grant = t;
                    }
                    GrantAction::Revoke => {
                        let before = p.active;
                        p.active &= !scopes;
                        if before != 0 && p.active == 0 {
                            self.sources.push(ObSource {
                                time: t,
                                app: p.app,
                                user: Some(p.user),
                                pair: Some(*pair),
                                reason: Reason::Revoke,
                                id: ev.id,
                                meta: ev.meta,
                            });
                        }
                    }
                    GrantAction::Unsubscribe => {
                        p.active = 0;
                        self.sources.push(ObSource {
                            time: t,
                            app: p.app,
                            user: Some(p.user),
                            pair: Some(*pair),
                            reason: Reason::Unsubscribe,
                            id: ev.id,
                            meta: ev.meta,
                        });
                    }
                }
                let (app, user) = (p.app, p.user);
                self.write_grant(ev, app, user, *action, *scopes);
                Ok(app)
            }
            EvKind::Deletion {
                app,
                user,
                kind,
                reason,
            } => {
                let pair = user.and_then(|u| self.pair_index.get(&(*app, u)).copied());
                match kind {
                    DelKind::Request => {
                        self.sources.push(ObSource {
                            time: t,
                            app: *app,
                            user: *user,
                            pair,
                            reason: *reason,
                            id: ev.id,
                            meta: ev.meta,
                        });
                    }
                    DelKind::Receipt => {
                        self.receipts.push(Receipt {
                            time: t,
                            app: *app,
                            user: *user,
                        });
                        match pair {
                            Some(p) => self.pairs[p as usize].last_receipt = t,
                            None if user.is_none() => self.apps[*app as usize].last_receipt_all = t,
                            None => {}
                        }
                    }
                }
                self.write_deletion(ev, *app, *user, *kind, *reason);
                Ok(*app)
            }
            EvKind::Access {
                app,
                user,
                pair,
                api,
                status,
                region,
                ip,
            } => {
                self.scripted_access(ev, *app, *user, *pair, *api, *status, region, ip)?;
                Ok(*app)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn scripted_access(
        &mut self,
        ev: &Ev,
        app: u32,
        user: Option<u32>,
        pair: Option<u32>,
        api_i: u8,
        status: u16,
        region: &'static str,
        ip: &str,
    ) -> anyhow::Result<()> {
        let t = ev.time;
        let api = APIS[api_i as usize];
        let st = &self.apps[app as usize];
        let data = (200..300).contains(&status) && user.is_some();
        let mut rules = 0u16;
        let mut last_grant = NEVER;
        let mut token = 0u16;
        if let Some(p) = pair {
            let ps = &self.pairs[p as usize];
            last_grant = ps.last_grant;
            token = ps.active | api.scope.map_or(0, |s| 1 << s);
            if data {
                if let Some(s) = api.scope {
                    let bit = 1u16 << s;
                    if ps.ever & bit == 0 {
                        rules |= SNG;
                    } else if ps.active & bit == 0 {
                        rules |= AAR;
                    }
                    if st.declared & bit == 0 {
                        rules |= US;
                    }
                }
                if st.terminated_at <= t {
                    rules |= AAT;
                }
                if api.cats & !st.cats != 0 {
                    rules |= UC;
                }
                if api.cats != 0 && region != "CN" && !st.export {
                    rules |= CB;
                }
            }
            let receipt = ps.last_receipt.max(st.last_receipt_all);
            if receipt > ps.last_grant {
                ensure!(
                    receipt != t,
                    "internal: planted access {} ties with a receipt",
                    id_string(ev.id)
                );
                rules |= DNE;
            }
        }
        if data {
            self.record_data_access(app as usize, pair, api.scope, t, ev.id);
            let u = user.expect("data access names a user");
            self.script_hour_users
                .entry((app, floor_hour(t)))
                .or_default()
                .insert(u);
        }
        self.scripted.push(ScriptedAccess {
            id: ev.id,
            time: t,
            app,
            user,
            ip: ip.into(),
            scope: api.scope,
            rules,
            meta: ev.meta,
            last_grant,
        });
        let mut rng = Rng::new(hash(&[self.seed, ev.id.0]), 0);
        let (records, bytes, latency) = call_size(&mut rng, &api, status);
        let token_id = user.map_or(hash(&[self.seed, u64::from(app), 0xA99]), |u| {
            hash(&[self.seed, u64::from(app), u64::from(u), (t / DAY) as u64])
        });
        let cats = if (200..300).contains(&status) {
            api.cats
        } else {
            0
        };
        self.write_access(
            ev.id,
            t,
            app as usize,
            user,
            api_i,
            token,
            cats,
            records,
            status,
            ip,
            region,
            token_id,
            latency,
            bytes,
            false,
        );
        Ok(())
    }

    fn record_data_access(
        &mut self,
        a: usize,
        pair: Option<u32>,
        scope: Option<u8>,
        t: i64,
        id: EventId,
    ) {
        let st = &mut self.apps[a];
        st.first_access = st.first_access.min(t);
        if let Some(s) = scope {
            st.scope_last_used[s as usize] = st.scope_last_used[s as usize].max(t);
        }
        if let Some(p) = pair {
            let ps = &mut self.pairs[p as usize];
            ps.first_access = ps.first_access.min(t);
        }
        if st.watched
            && let Some(v) = self.watch.get_mut(&(a as u32, floor_hour(t)))
        {
            v.push(id);
        }
    }

    fn flush_session(&mut self, a: usize) {
        let st = &mut self.apps[a];
        if st.session_hour != NEVER {
            let idx = ((st.session_hour - self.hour0) / HOUR) as usize;
            st.hour_counts[idx] = st.seen.iter().filter(|s| **s).count() as u16;
        }
    }

    #[inline]
    fn eligible(&self, a: usize, p: u32) -> bool {
        let st = &self.apps[a];
        let ps = &self.pairs[p as usize];
        ps.active & st.usable_scopes != 0
            && ps.last_receipt.max(st.last_receipt_all) < ps.last_grant
    }

    fn refresh_session(&mut self, a: usize, hour: i64) {
        self.flush_session(a);
        let app = &self.w.apps[a];
        let base_len = app.base.len();
        let cap = app.session_cap.min(base_len);
        let mut members = std::mem::take(&mut self.apps[a].members);
        members.clear();
        if cap > 0 {
            let k = self.rng.range(cap.div_ceil(2) as i64, cap as i64) as usize;
            let start = self.base_start[a];
            let mut attempts = 4 * k;
            while members.len() < k && attempts > 0 {
                attempts -= 1;
                let p = start + self.rng.below(base_len as u64) as u32;
                if self.eligible(a, p) && !members.contains(&p) {
                    members.push(p);
                }
            }
        }
        let st = &mut self.apps[a];
        st.seen.clear();
        st.seen.resize(members.len(), false);
        st.members = members;
        st.session_hour = hour;
    }

    fn natural_access(&mut self, t: i64, sink: &mut dyn GenSink) -> anyhow::Result<()> {
        let w = self.w;
        ensure!(
            !self.live.is_empty(),
            "internal: no live app for normal traffic"
        );
        let total = self.live.last().expect("non-empty").0;
        let x = self.rng.unit() * total;
        let k = self
            .live
            .partition_point(|(c, _)| *c <= x)
            .min(self.live.len() - 1);
        let a = self.live[k].1 as usize;
        let hour = floor_hour(t);
        if self.apps[a].session_hour != hour {
            self.refresh_session(a, hour);
        }
        let app = &w.apps[a];
        let dev = &w.devs[app.dev];
        let id = self.ids.next(Topic::ApiAccess);

        // Whose data: a session member who may be read, or an app-level call.
        let mut member = None;
        let n = self.apps[a].members.len();
        if n > 0 && !self.rng.chance(0.01) {
            let s = self.rng.below(n as u64) as usize;
            for i in 0..n {
                let slot = (s + i) % n;
                if self.eligible(a, self.apps[a].members[slot]) {
                    member = Some(slot);
                    break;
                }
            }
        }
        let mut status = {
            let mut r = self.rng.below(10_000) as u32;
            let mut chosen = 200;
            for (s, wgt) in STATUSES {
                if r < wgt {
                    chosen = s;
                    break;
                }
                r -= wgt;
            }
            chosen
        };
        let (user, pair, api_i, token) = match member {
            None => {
                let api = A_FIRST_APP_LEVEL
                    + self
                        .rng
                        .below((APIS.len() - A_FIRST_APP_LEVEL as usize) as u64)
                        as u8;
                (None, None, api, 0)
            }
            Some(slot) => {
                let p = self.apps[a].members[slot];
                let ps = &self.pairs[p as usize];
                let active = ps.active;
                let st = &self.apps[a];
                let mut api_i = None;
                if self.rng.chance(0.003) {
                    // A call the token does not cover: the gateway answers 403.
                    let missing: Vec<u8> = (0..A_FIRST_APP_LEVEL)
                        .filter(|&i| active & (1 << APIS[i as usize].scope.expect("user API")) == 0)
                        .collect();
                    if !missing.is_empty() {
                        api_i = Some(*self.rng.pick(&missing));
                        status = 403;
                    }
                }
                let api_i = match api_i {
                    Some(i) => i,
                    None => {
                        let mut sum = 0u32;
                        for &i in &st.usable {
                            let api = &APIS[i as usize];
                            if active & (1 << api.scope.expect("user API")) != 0 {
                                sum += api.weight;
                            }
                        }
                        let mut r = self.rng.below(u64::from(sum)) as u32;
                        let mut chosen = st.usable[0];
                        for &i in &st.usable {
                            let api = &APIS[i as usize];
                            if active & (1 << api.scope.expect("user API")) != 0 {
                                if r < api.weight {
                                    chosen = i;
                                    break;
                                }
                                r -= api.weight;
                            }
                        }
                        chosen
                    }
                };
                (Some(ps.user), Some((p, slot)), api_i, active)
            }
        };
        let api = APIS[api_i as usize];
        // Where from.
        let export = self.apps[a].export;
        let (ip, region): (&str, &'static str) = if export && self.rng.chance(0.25) {
            let (ip, r) = self.rng.pick(&dev.ips_abroad);
            (ip, *r)
        } else if !export && self.rng.chance(0.002) {
            let (ip, r) = self.rng.pick(&dev.ips_abroad);
            if api.cats != 0 && (200..300).contains(&status) {
                status = 403; // the gateway refuses personal data abroad
            }
            (ip, *r)
        } else {
            (self.rng.pick(&dev.ips_cn).as_str(), "CN")
        };
        let ok = (200..300).contains(&status);
        if ok && let Some((p, slot)) = pair {
            self.record_data_access(a, Some(p), api.scope, t, id);
            self.apps[a].seen[slot] = true;
        }
        let (records, bytes, latency) = call_size(&mut self.rng, &api, status);
        let token_id = match user {
            Some(u) => hash(&[self.seed, a as u64, u64::from(u), (t / DAY) as u64]),
            None => hash(&[self.seed, a as u64, 0xA99]),
        };
        let extra = self.rng.chance(0.0005);
        let cats = if ok { api.cats } else { 0 };
        self.write_access(
            id, t, a, user, api_i, token, cats, records, status, ip, region, token_id, latency,
            bytes, extra,
        );
        let line = std::mem::take(&mut self.buf);
        self.writers[Topic::ApiAccess.index()].event(sink, &app.id, &line)?;
        self.buf = line;
        Ok(())
    }

    // ---------------------------------------------------------------- lines

    fn head(&mut self, id: EventId, t: i64) {
        self.buf.clear();
        self.buf.extend_from_slice(b"{\"event_id\":\"");
        fmt::uuid(&mut self.buf, id.0, id.1);
        self.buf.extend_from_slice(b"\",\"event_time\":\"");
        self.tf.write(&mut self.buf, t);
        self.buf.push(b'"');
    }

    fn str_field(&mut self, name: &str, v: &str) {
        let b = &mut self.buf;
        b.extend_from_slice(b",\"");
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(b"\":\"");
        b.extend_from_slice(v.as_bytes());
        b.push(b'"');
    }

    fn user_field(&mut self, user: Option<u32>) {
        match user {
            Some(u) => {
                let w = self.w;
                self.str_field("user_id", &w.users[u as usize]);
            }
            None => self.buf.extend_from_slice(b",\"user_id\":null"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write_access(
        &mut self,
        id: EventId,
        t: i64,
        a: usize,
        user: Option<u32>,
        api_i: u8,
        token_scopes: u16,
        cats: u16,
        records: u32,
        status: u16,
        ip: &str,
        region: &str,
        token_id: u64,
        latency: u32,
        bytes: u64,
        extra: bool,
    ) {
        let w = self.w;
        let app = &w.apps[a];
        let api = &APIS[api_i as usize];
        self.head(id, t);
        self.str_field("app_id", &app.id);
        self.str_field("developer_id", &w.devs[app.dev].id);
        self.user_field(user);
        self.str_field("api", api.name);
        match api.scope {
            Some(s) => self.str_field("required_scope", SCOPES[s as usize]),
            None => self.buf.extend_from_slice(b",\"required_scope\":null"),
        }
        let b = &mut self.buf;
        b.extend_from_slice(b",\"token_scopes\":");
        b.extend_from_slice(&self.lists.scopes[token_scopes as usize]);
        b.extend_from_slice(b",\"data_categories\":");
        b.extend_from_slice(&self.lists.cats[cats as usize]);
        b.extend_from_slice(b",\"record_count\":");
        fmt::uint(b, u64::from(records));
        b.extend_from_slice(b",\"status\":");
        fmt::uint(b, u64::from(status));
        self.str_field("client_ip", ip);
        self.str_field("client_region", region);
        let b = &mut self.buf;
        b.extend_from_slice(b",\"token_id\":\"tk_");
        fmt::hex(b, token_id, 16);
        b.extend_from_slice(b"\",\"latency_ms\":");
        fmt::uint(b, u64::from(latency));
        b.extend_from_slice(b",\"response_bytes\":");
        fmt::uint(b, bytes);
        if extra {
            b.extend_from_slice(b",\"gateway\":{\"pod\":\"gw-");
            fmt::uint(b, token_id % 12);
            b.extend_from_slice(b"\",\"retry\":0,\"tags\":[\"canary\"]},\"trace_id\":\"");
            fmt::hex(b, token_id.rotate_left(19) ^ id.1, 16);
            b.push(b'"');
        }
        b.push(b'}');
    }

    fn write_app(
        &mut self,
        ev: &Ev,
        a: usize,
        action: AppAction,
        declared: u16,
        cats: u16,
        export: bool,
    ) {
        let w = self.w;
        let app = &w.apps[a];
        self.head(ev.id, ev.time);
        self.str_field("app_id", &app.id);
        self.str_field("developer_id", &w.devs[app.dev].id);
        self.str_field("app_kind", app.profile.kind.as_str());
        self.str_field("action", action.as_str());
        let b = &mut self.buf;
        b.extend_from_slice(b",\"declared_scopes\":");
        b.extend_from_slice(&self.lists.scopes[declared as usize]);
        b.extend_from_slice(b",\"declared_categories\":");
        b.extend_from_slice(&self.lists.cats[cats as usize]);
        b.extend_from_slice(if export {
            b",\"export_approved\":true"
        } else {
            b",\"export_approved\":false"
        });
        if action == AppAction::Register {
            b.extend_from_slice(b",\"review\":{\"reviewer\":\"ops\",\"ticket\":");
            fmt::uint(b, 10_000 + a as u64);
            b.push(b'}');
        }
        b.push(b'}');
    }

    fn write_grant(&mut self, ev: &Ev, app: u32, user: u32, action: GrantAction, scopes: u16) {
        let w = self.w;
        self.head(ev.id, ev.time);
        self.str_field("app_id", &w.apps[app as usize].id);
        self.str_field("user_id", &w.users[user as usize]);
        self.str_field("action", action.as_str());
        let b = &mut self.buf;
        b.extend_from_slice(b",\"scopes\":");
        let s = if action == GrantAction::Unsubscribe {
            0
        } else {
            scopes
        };
        b.extend_from_slice(&self.lists.scopes[s as usize]);
        if ev.extra {
            b.extend_from_slice(b",\"channel\":\"mobile\"");
        }
        b.push(b'}');
    }

    fn write_deletion(
        &mut self,
        ev: &Ev,
        app: u32,
        user: Option<u32>,
        kind: DelKind,
        reason: Reason,
    ) {
        let w = self.w;
        self.head(ev.id, ev.time);
        self.str_field("app_id", &w.apps[app as usize].id);
        self.user_field(user);
        self.str_field(
            "kind",
            if kind == DelKind::Request {
                "request"
            } else {
                "receipt"
            },
        );
        self.str_field("reason", reason.as_str());
        self.buf.push(b'}');
    }

    /// `n` malformed lines of each kind for a topic, each distinct.
    fn malformed_lines(&mut self, topic: Topic, n: u32, rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
        let w = self.w;
        let mut out = Vec::new();
        for k in 0..n {
            let a = rng.below(w.apps.len() as u64) as usize;
            let app = &w.apps[a];
            let dev = &w.devs[app.dev].id;
            let user = &w.users[rng.below(w.natural_users as u64) as usize];
            let t = time_string(w.start + 2 * rng.below(((w.end - w.start) / 2) as u64) as i64);
            let day = &t[..10];
            // A well-formed body per topic, `{app}` replaced to drop the field.
            let body = |id: &str, time: &str, app_part: &str, tweak: &str| -> String {
                match topic {
                    Topic::ApiAccess => format!(
                        r#"{{"event_id":"{id}","event_time":"{time}"{app_part},"developer_id":"{dev}","user_id":"{user}","api":"order.list","required_scope":"order.read","token_scopes":["order.read"],"data_categories":["order"],"record_count":{rc},"status":{st},"client_ip":"10.0.0.1","client_region":"CN","token_id":"tk_0","latency_ms":5,"response_bytes":100}}"#,
                        rc = if tweak == "rc" {
                            "\"x\"".to_string()
                        } else {
                            "3".to_string()
                        },
                        st = if tweak == "status" { "\"200\"" } else { "200" },
                    ),
                    Topic::Grants => format!(
                        r#"{{"event_id":"{id}","event_time":"{time}"{app_part},"user_id":"{user}","action":"grant","scopes":{sc}}}"#,
                        sc = if tweak.is_empty() {
                            "[\"order.read\"]"
                        } else {
                            "\"order.read\""
                        },
                    ),
                    Topic::Apps => format!(
                        r#"{{"event_id":"{id}","event_time":"{time}"{app_part},"developer_id":"{dev}","app_kind":"third_party","action":"update","declared_scopes":["item.read"],"declared_categories":[],"export_approved":{ex}}}"#,
                        ex = if tweak.is_empty() { "false" } else { "\"yes\"" },
                    ),
                    Topic::Deletions => format!(
                        r#"{{"event_id":"{id}","event_time":"{time}"{app_part},"user_id":{uid},"kind":"request","reason":"user_request"}}"#,
                        uid = if tweak.is_empty() {
                            format!("\"{user}\"")
                        } else {
                            (42 + k).to_string()
                        },
                    ),
                }
            };
            let app_part = format!(",\"app_id\":\"{}\"", app.id);
            let mut fresh = || id_string(self.ids.next(topic));
            let mut lines: Vec<Vec<u8>> = Vec::new();
            // Not JSON: a line cut short.
            let full = body(&fresh(), &t, &app_part, "");
            lines.push(full.as_bytes()[..full.len() * 2 / 3].to_vec());
            // JSON, not an object.
            lines.push(
                match k % 3 {
                    0 => format!("[{},{}]", k + 1, k + 2),
                    1 => format!("\"{}\"", fresh()),
                    _ => format!("{}", 1000 + k),
                }
                .into_bytes(),
            );
            // Missing required field (app_id).
            lines.push(body(&fresh(), &t, "", "").into_bytes());
            // Wrong type.
            let tweak = if topic == Topic::ApiAccess && k % 2 == 1 {
                "rc"
            } else if topic == Topic::ApiAccess {
                "status"
            } else {
                "type"
            };
            lines.push(body(&fresh(), &t, &app_part, tweak).into_bytes());
            // Bad time.
            let bad = if k % 2 == 0 {
                "2026-13-45T99:00:00".to_string()
            } else {
                format!("{day}T08:15:30")
            };
            lines.push(body(&fresh(), &bad, &app_part, "").into_bytes());
            let key = app.id.clone();
            out.extend(lines.into_iter().map(|l| (key.clone(), l)));
        }
        out
    }

    // ---------------------------------------------------------------- truth

    fn truth(mut self, stats: [TopicStats; 4]) -> anyhow::Result<Outcome> {
        let w = self.w;
        let now = w.end;
        let mut findings: Vec<(u16, i64, PlantedFinding)> = Vec::new();
        let app_id = |a: u32| w.apps[a as usize].id.clone();
        let dev_id = |a: u32| w.devs[w.apps[a as usize].dev].id.clone();
        let user_id = |u: Option<u32>| u.map(|u| w.users[u as usize].clone());
        let blank =
            |rule: u16, a: u32, u: Option<u32>, ids: Vec<String>, note: String| PlantedFinding {
                rule_id: rule_names(rule)[0].to_string(),
                app_id: app_id(a),
                developer_id: dev_id(a),
                user_id: user_id(u),
                event_ids: ids,
                scope: None,
                reason: None,
                client_ip: None,
                event_time: None,
                window_start: None,
                window_end: None,
                created_at: None,
                due_at: None,
                note,
            };

        // client_id_sharing: planted accesses on one IP in one clock hour by
        // apps of two or more developers (normal IPs belong to one developer).
        let mut by_ip_hour: BTreeMap<(&str, i64), Vec<usize>> = BTreeMap::new();
        for (i, s) in self.scripted.iter().enumerate() {
            by_ip_hour
                .entry((&s.ip, floor_hour(s.time)))
                .or_default()
                .push(i);
        }
        let mut shared = Vec::new();
        for ((_, _), idx) in &by_ip_hour {
            let devs: BTreeSet<usize> = idx
                .iter()
                .map(|&i| w.apps[self.scripted[i].app as usize].dev)
                .collect();
            if devs.len() >= 2 {
                shared.extend(idx.iter().copied());
            }
        }
        for i in shared {
            self.scripted[i].rules |= CIS;
        }

        // Event-level findings, checked against the script's intent.
        for s in &self.scripted {
            let meta = &self.metas[s.meta as usize];
            ensure!(
                s.rules == meta.expect_rules,
                "internal: planted access {} ({}) breaks {:?}, expected {:?}",
                id_string(s.id),
                meta.note,
                rule_names(s.rules),
                rule_names(meta.expect_rules)
            );
            for bit in 0..RULES.len() {
                let rule = 1u16 << bit;
                if s.rules & rule == 0 {
                    continue;
                }
                let mut f = blank(
                    rule,
                    s.app,
                    s.user,
                    vec![id_string(s.id)],
                    meta.note.clone(),
                );
                f.event_time = Some(time_string(s.time));
                if rule & (SNG | AAR | US) != 0 {
                    f.scope = s.scope.map(|x| SCOPES[x as usize].to_string());
                }
                if rule == CIS {
                    f.client_ip = Some(s.ip.to_string());
                    let h = floor_hour(s.time);
                    f.window_start = Some(time_string(h));
                    f.window_end = Some(time_string(h + HOUR));
                }
                findings.push((rule, s.time, f));
            }
        }

        // bulk_harvest: hourly distinct users, normal + planted.
        let mut harvests = Vec::new();
        for a in 0..w.apps.len() {
            let mut totals: Vec<u32> = self.apps[a]
                .hour_counts
                .iter()
                .map(|&c| u32::from(c))
                .collect();
            let mut any = false;
            for ((app, h), users) in &self.script_hour_users {
                if *app as usize == a {
                    totals[((h - self.hour0) / HOUR) as usize] += users.len() as u32;
                    any = true;
                }
            }
            if !any {
                ensure!(
                    totals.iter().all(|&c| c < 100),
                    "internal: normal traffic reached 100 users in an hour"
                );
                continue;
            }
            for (i, &c) in totals.iter().enumerate() {
                if c < 100 {
                    continue;
                }
                let mut prev: Vec<u32> = (i as i64 - HARVEST_LOOKBACK_HOURS..i as i64)
                    .map(|j| if j < 0 { 0 } else { totals[j as usize] })
                    .collect();
                prev.sort_unstable();
                let (lower, upper) = (prev[83], prev[84]);
                if c >= 10 * upper {
                    harvests.push((a as u32, self.hour0 + i as i64 * HOUR, c, upper));
                } else if c >= 10 * lower {
                    bail!("internal: bulk_harvest hour depends on the median definition");
                }
            }
        }
        let got: BTreeSet<(u32, i64)> = harvests.iter().map(|h| (h.0, h.1)).collect();
        ensure!(
            got == self.expected_harvests(),
            "internal: bulk_harvest hours {got:?} differ from the planted ones"
        );
        for (a, h, c, median) in harvests {
            let mut ids: Vec<String> = self
                .watch
                .get(&(a, h))
                .map(|v| v.iter().map(|&i| id_string(i)).collect())
                .unwrap_or_default();
            ids.sort();
            let mut f = blank(
                BH,
                a,
                None,
                ids,
                format!(
                    "{c} distinct users in the hour; median of the previous 168 hours <= {median}"
                ),
            );
            f.window_start = Some(time_string(h));
            f.window_end = Some(time_string(h + HOUR));
            findings.push((BH, h, f));
        }

        // Obligations.
        let mut obligations = Vec::new();
        let later = now + 3 * DAY;
        for src in &self.sources {
            let first = match (src.user, src.pair) {
                (None, _) => self.apps[src.app as usize].first_access,
                (Some(_), Some(p)) => self.pairs[p as usize].first_access,
                (Some(_), None) => i64::MAX,
            };
            let expect = (src.meta != NO_META)
                .then(|| self.metas[src.meta as usize].expect_obligation)
                .flatten();
            if first >= src.time {
                ensure!(
                    expect.is_none_or(|e| e.is_none()),
                    "internal: planted obligation {} did not arise",
                    id_string(src.id)
                );
                continue;
            }
            let due = src.time + src.reason.deadline_ms();
            let fulfilled = self
                .receipts
                .iter()
                .filter(|r| {
                    r.app == src.app
                        && r.time >= src.time
                        && (r.user.is_none() || r.user == src.user)
                })
                .map(|r| r.time)
                .min();
            let mut not_effective = false;
            if let Some(f) = fulfilled {
                for s in &self.scripted {
                    if s.app == src.app
                        && s.user.is_some()
                        && (src.user.is_none() || s.user == src.user)
                        && s.time > f
                    {
                        ensure!(s.last_grant != f, "internal: grant ties with a receipt");
                        if s.last_grant < f {
                            not_effective = true;
                        }
                    }
                }
            }
            let state_at = |at: i64| -> &'static str {
                match fulfilled {
                    Some(_) if not_effective => "not_effective",
                    Some(f) if f <= due => "fulfilled",
                    Some(_) => "fulfilled_late",
                    None if at > due => "overdue",
                    None => "open",
                }
            };
            let state = state_at(now);
            ensure!(
                due != now,
                "internal: an obligation is due exactly at the evaluation time"
            );
            if let Some(e) = expect {
                ensure!(
                    e == Some(state),
                    "internal: planted obligation {} is {state}, expected {e:?}",
                    id_string(src.id)
                );
            }
            let note = if src.meta == NO_META {
                "normal traffic".to_string()
            } else {
                self.metas[src.meta as usize].note.clone()
            };
            let mut at = BTreeMap::new();
            at.insert(time_string(now), state.to_string());
            at.insert(time_string(later), state_at(later).to_string());
            obligations.push(PlantedObligation {
                app_id: app_id(src.app),
                user_id: user_id(src.user),
                reason: src.reason.as_str().to_string(),
                created_at: time_string(src.time),
                due_at: time_string(due),
                fulfilled_at: fulfilled.map(time_string),
                state: state.to_string(),
                source_event_id: id_string(src.id),
                expected_state_at: at,
                note: note.clone(),
            });
            if state == "overdue" {
                let mut f = blank(DO, src.app, src.user, vec![id_string(src.id)], note);
                f.reason = Some(src.reason.as_str().to_string());
                f.created_at = Some(time_string(src.time));
                f.due_at = Some(time_string(due));
                findings.push((DO, src.time, f));
            }
        }

        // unused_scope at now.
        let mut granted = vec![0u16; w.apps.len()];
        for p in &self.pairs {
            granted[p.app as usize] |= p.active;
        }
        for (a, st) in self.apps.iter().enumerate() {
            if st.terminated_at <= now || !st.registered {
                continue;
            }
            let cand = st.declared | granted[a];
            for (s, scope) in SCOPES.iter().enumerate() {
                if cand & (1 << s) == 0 {
                    continue;
                }
                let last = st.scope_last_used[s];
                ensure!(
                    last != now - UNUSED_WINDOW,
                    "internal: access exactly 30 days before now"
                );
                if last < now - UNUSED_WINDOW {
                    let how = match (st.declared & (1 << s) != 0, granted[a] & (1 << s) != 0) {
                        (true, true) => "declared and granted",
                        (true, false) => "declared",
                        _ => "granted by a user, not declared",
                    };
                    let mut f = blank(
                        UNUSED,
                        a as u32,
                        None,
                        Vec::new(),
                        format!("{how}; no data access with it in the 30 days before now"),
                    );
                    f.scope = Some(scope.to_string());
                    f.window_start = Some(time_string(now - UNUSED_WINDOW));
                    f.window_end = Some(time_string(now));
                    findings.push((UNUSED, now, f));
                }
            }
        }

        findings.sort_by(|x, y| {
            x.0.cmp(&y.0)
                .then(x.1.cmp(&y.1))
                .then_with(|| x.2.app_id.cmp(&y.2.app_id))
                .then_with(|| x.2.event_ids.cmp(&y.2.event_ids))
                .then_with(|| x.2.scope.cmp(&y.2.scope))
        });
        obligations.sort_by(|x, y| {
            x.created_at
                .cmp(&y.created_at)
                .then_with(|| x.source_event_id.cmp(&y.source_event_id))
        });

        let mut clean = Vec::new();
        for (m, meta) in self.metas.iter().enumerate() {
            if meta.clean
                && let Some((topic, id)) = self.meta_events[m]
            {
                clean.push(ExpectedClean {
                    topic,
                    event_id: id_string(id),
                    note: meta.note.clone(),
                });
            }
        }
        Ok(Outcome {
            stats,
            findings: findings.into_iter().map(|f| f.2).collect(),
            obligations,
            clean,
        })
    }

    fn expected_harvests(&self) -> BTreeSet<(u32, i64)> {
        self.harvest_plan.iter().copied().collect()
    }
}

/// Records, response bytes and latency of a call.
fn call_size(rng: &mut Rng, api: &Api, status: u16) -> (u32, u64, u32) {
    let latency = {
        let base = f64::from(api.latency_ms) * (0.5 + rng.unit());
        let l = if rng.chance(0.01) { base * 10.0 } else { base };
        l.max(1.0) as u32
    };
    if (200..300).contains(&status) {
        let records = rng.range(i64::from(api.records.0), i64::from(api.records.1)) as u32;
        let per = u64::from(api.bytes_per_record);
        let bytes = 180 + u64::from(records) * per + rng.below(per / 4 + 1);
        (records, bytes, latency)
    } else {
        (0, 60 + rng.below(140), latency)
    }
}
