//! The planted scenarios: scripted events that break each rule of SPEC
//! section 3 and drive obligations into every state of section 4, plus the
//! edge cases next to them that must *not* be flagged.
//!
//! Scenario users come from a reserved range that normal traffic never
//! touches, so each scenario's pairs see only the events written here. The
//! simulator applies these events with the normal ones and re-derives every
//! finding from state; a scripted access whose derived rules differ from the
//! `expect` written here aborts generation (a bug in this file).

use super::fmt::{DAY, HOUR, MIN, SEC};
use super::model::*;
use super::plan::*;
use super::rng::Rng;

/// Scenario output.
#[derive(Debug)]
pub struct Script {
    pub evs: Vec<Ev>,
    pub metas: Vec<Meta>,
    pub plans: Vec<AppPlan>,
    /// Expected `bulk_harvest` app-hours.
    pub harvests: Vec<(u32, i64)>,
}

pub struct Builder<'a> {
    w: &'a World,
    pairs: &'a mut Pairs,
    ids: &'a mut Ids,
    seq: &'a mut u32,
    rng: Rng,
    seed: u64,
    next_reserved: usize,
    out: Script,
    ip_n: u32,
}

/// Options of a scripted access.
#[derive(Debug, Clone)]
struct Call {
    status: u16,
    region: &'static str,
    ip: Option<String>,
    expect: u16,
    note: String,
    clean: bool,
}

fn call(expect: u16, note: &str) -> Call {
    Call {
        status: 200,
        region: "CN",
        ip: None,
        expect,
        note: note.to_string(),
        clean: false,
    }
}

fn ok(note: &str) -> Call {
    Call {
        clean: true,
        ..call(0, note)
    }
}

/// Plain setup traffic: clean, not worth listing.
fn setup() -> Call {
    call(0, "scenario setup")
}

impl Call {
    fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }
    fn from(mut self, region: &'static str, ip: String) -> Self {
        self.region = region;
        self.ip = Some(ip);
        self
    }
    fn ip(mut self, ip: String) -> Self {
        self.ip = Some(ip);
        self
    }
}

fn floor_hour(t: i64) -> i64 {
    t - t.rem_euclid(HOUR)
}

impl<'a> Builder<'a> {
    pub fn new(
        w: &'a World,
        pairs: &'a mut Pairs,
        ids: &'a mut Ids,
        seq: &'a mut u32,
        seed: u64,
    ) -> Self {
        let plans = w
            .apps
            .iter()
            .map(|a| AppPlan {
                profile: a.profile,
                register_at: a.register_at,
                updates: Vec::new(),
                terminate_at: None,
                story_cutoff: w.end - SEC,
            })
            .collect();
        Self {
            w,
            pairs,
            ids,
            seq,
            rng: Rng::new(seed, 3),
            seed,
            next_reserved: w.natural_users,
            out: Script {
                evs: Vec::new(),
                metas: Vec::new(),
                plans,
                harvests: Vec::new(),
            },
            ip_n: 0,
        }
    }

    fn user(&mut self) -> u32 {
        assert!(
            self.next_reserved < self.w.users.len(),
            "out of reserved users"
        );
        self.next_reserved += 1;
        (self.next_reserved - 1) as u32
    }

    fn meta(&mut self, m: Meta) -> MetaId {
        self.out.metas.push(m);
        (self.out.metas.len() - 1) as MetaId
    }

    fn push(&mut self, time: i64, meta: MetaId, kind: EvKind) -> EventId {
        assert!(time % 2 == 0, "planted events use even milliseconds");
        assert!(
            time >= self.w.start && time < self.w.end,
            "planted event outside the period"
        );
        let ev = Ev {
            time,
            seq: *self.seq,
            id: (0, 0),
            meta,
            extra: false,
            kind,
        };
        let id = self.ids.next(ev.topic());
        *self.seq += 1;
        self.out.evs.push(Ev { id, ..ev });
        id
    }

    fn grant_ev(
        &mut self,
        t: i64,
        app: usize,
        user: u32,
        action: GrantAction,
        scopes: u16,
        meta: MetaId,
    ) -> EventId {
        let pair = self.pairs.get_or_add(app as u32, user);
        assert!(
            pair >= self.pairs.natural,
            "scenario pairs are never normal pairs"
        );
        self.push(
            t,
            meta,
            EvKind::Grant {
                pair,
                action,
                scopes,
            },
        )
    }

    fn grant(&mut self, t: i64, app: usize, user: u32, scopes: u16) -> EventId {
        self.grant_ev(t, app, user, GrantAction::Grant, scopes, NO_META)
    }

    fn revoke(
        &mut self,
        t: i64,
        app: usize,
        user: u32,
        scopes: u16,
        ob: Option<&'static str>,
        note: &str,
    ) -> EventId {
        let m = self.meta(Meta {
            note: note.into(),
            expect_obligation: Some(ob),
            clean: ob.is_none(),
            ..Meta::default()
        });
        self.grant_ev(t, app, user, GrantAction::Revoke, scopes, m)
    }

    fn unsub(
        &mut self,
        t: i64,
        app: usize,
        user: u32,
        ob: Option<&'static str>,
        note: &str,
    ) -> EventId {
        let m = self.meta(Meta {
            note: note.into(),
            expect_obligation: Some(ob),
            clean: ob.is_none(),
            ..Meta::default()
        });
        self.grant_ev(t, app, user, GrantAction::Unsubscribe, 0, m)
    }

    fn request(
        &mut self,
        t: i64,
        app: usize,
        user: Option<u32>,
        reason: Reason,
        ob: Option<&'static str>,
        note: &str,
    ) -> EventId {
        let m = self.meta(Meta {
            note: note.into(),
            expect_obligation: Some(ob),
            clean: ob.is_none(),
            ..Meta::default()
        });
        if user.is_none() {
            let p = &mut self.out.plans[app];
            p.story_cutoff = p.story_cutoff.min(t - HOUR);
        }
        if let Some(u) = user {
            self.pairs.get_or_add(app as u32, u);
        }
        self.push(
            t,
            m,
            EvKind::Deletion {
                app: app as u32,
                user,
                kind: DelKind::Request,
                reason,
            },
        )
    }

    fn receipt(&mut self, t: i64, app: usize, user: Option<u32>, reason: Reason) -> EventId {
        if let Some(u) = user {
            self.pairs.get_or_add(app as u32, u);
        }
        self.push(
            t,
            NO_META,
            EvKind::Deletion {
                app: app as u32,
                user,
                kind: DelKind::Receipt,
                reason,
            },
        )
    }

    fn receipt_note(
        &mut self,
        t: i64,
        app: usize,
        user: Option<u32>,
        reason: Reason,
        note: &str,
    ) -> EventId {
        let m = self.meta(Meta {
            note: note.into(),
            clean: true,
            ..Meta::default()
        });
        if let Some(u) = user {
            self.pairs.get_or_add(app as u32, u);
        }
        self.push(
            t,
            m,
            EvKind::Deletion {
                app: app as u32,
                user,
                kind: DelKind::Receipt,
                reason,
            },
        )
    }

    fn update(
        &mut self,
        t: i64,
        app: usize,
        declared: u16,
        cats: u16,
        export: bool,
        note: &str,
    ) -> EventId {
        self.out.plans[app]
            .updates
            .push((t, declared, cats, export));
        let m = self.meta(Meta {
            note: note.into(),
            ..Meta::default()
        });
        self.push(
            t,
            m,
            EvKind::App {
                app: app as u32,
                action: AppAction::Update,
                declared,
                cats,
                export,
            },
        )
    }

    fn terminate(&mut self, t: i64, app: usize, ob: Option<&'static str>, note: &str) -> EventId {
        let p = &mut self.out.plans[app];
        p.terminate_at = Some(t);
        p.story_cutoff = p.story_cutoff.min(t - HOUR);
        let (declared, cats, export) = p.updates.last().map_or(
            (
                p.profile.declared,
                p.profile.cats,
                self.w.apps[app].export_at_register,
            ),
            |u| (u.1, u.2, u.3),
        );
        let m = self.meta(Meta {
            note: note.into(),
            expect_obligation: Some(ob),
            clean: ob.is_none(),
            ..Meta::default()
        });
        self.push(
            t,
            m,
            EvKind::App {
                app: app as u32,
                action: AppAction::Terminate,
                declared,
                cats,
                export,
            },
        )
    }

    fn access(&mut self, t: i64, app: usize, user: u32, api: u8, c: Call) -> EventId {
        let pair = self.pairs.get_or_add(app as u32, user);
        assert!(
            pair >= self.pairs.natural,
            "scenario pairs are never normal pairs"
        );
        let m = self.meta(Meta {
            note: c.note,
            expect_rules: c.expect,
            clean: c.clean,
            ..Meta::default()
        });
        let a = &self.w.apps[app];
        let ip = c.ip.unwrap_or_else(|| self.w.devs[a.dev].ips_cn[0].clone());
        self.push(
            t,
            m,
            EvKind::Access {
                app: app as u32,
                user: Some(user),
                pair: Some(pair),
                api,
                status: c.status,
                region: c.region,
                ip: ip.into(),
            },
        )
    }

    fn abroad_ip(&mut self, region: &str) -> String {
        self.ip_n += 1;
        reserved_abroad_ip(region, self.ip_n)
    }

    /// Builds every scenario.
    pub fn build(mut self) -> Script {
        let w = self.w;
        // Every scenario time is shifted by one seed-dependent offset (under
        // an hour, even milliseconds): planted events do not sit on round
        // hours, while ties and order between them stay as written. Clock-hour
        // scenarios re-align with `floor_hour`.
        let seed = self.seed;
        let jitter = (7 + (seed % 41) as i64) * MIN
            + ((seed * 7) % 60) as i64 * SEC
            + 2 * ((seed * 13) % 500) as i64;
        let s = w.start + jitter;
        let e = w.end + jitter - HOUR;
        let t = |d: i64, h: i64, m: i64| s + d * DAY + h * HOUR + m * MIN;
        let app = |r: Role| w.app_of_role(r);
        let erp = app(Role::HostErp);
        let crm = app(Role::HostCrm);
        let logi = app(Role::HostLogi);
        let selfa = app(Role::HostSelf);
        let harv1 = app(Role::Harv1);
        let harv2 = app(Role::Harv2);
        let term1 = app(Role::Term1);
        let term2 = app(Role::Term2);
        let term3 = app(Role::Term3);
        let upd = app(Role::Upd);
        let exp = app(Role::Exp);
        let fin = app(Role::HostFin);
        let pall = app(Role::PlatformAll);
        let still = app(Role::Stillborn);
        let b = t(1, 0, 0);

        // ---- scope_not_granted -------------------------------------------
        let u = self.user();
        self.grant(b + HOUR, crm, u, S_ORDER);
        self.access(b + 2 * HOUR, crm, u, A_ORDER_LIST, setup());
        self.access(
            b + 3 * HOUR,
            crm,
            u,
            A_PHONE_GET,
            call(
                SNG,
                "user.phone never granted; the user granted order.read only",
            ),
        );
        let u = self.user();
        self.access(
            b + 4 * HOUR,
            erp,
            u,
            A_ORDER_LIST,
            call(SNG, "no grant at all for this (app, user)"),
        );
        let u = self.user();
        self.access(
            b + 5 * HOUR,
            logi,
            u,
            A_LOGISTICS_TRACE,
            call(SNG, "access 1 s before the grant"),
        );
        self.grant(b + 5 * HOUR + SEC, logi, u, S_LOGISTICS);
        self.access(b + 6 * HOUR, logi, u, A_LOGISTICS_TRACE, setup());
        let u = self.user();
        self.grant(b + 7 * HOUR, logi, u, S_ORDER);
        self.access(
            b + 8 * HOUR,
            erp,
            u,
            A_ORDER_LIST,
            call(SNG, "order.read granted to another app only"),
        );
        let u = self.user();
        self.grant(b + 9 * HOUR, erp, u, S_ORDER | S_ITEM);
        self.access(
            b + 9 * HOUR,
            erp,
            u,
            A_ORDER_GET,
            ok("access at the same millisecond as the grant: granted at or before"),
        );

        // ---- access_after_revocation --------------------------------------
        let u = self.user();
        self.grant(b + 10 * HOUR, erp, u, S_ORDER | S_LOGISTICS);
        self.access(b + 11 * HOUR, erp, u, A_LOGISTICS_TRACE, setup());
        self.revoke(
            b + 12 * HOUR,
            erp,
            u,
            S_LOGISTICS,
            None,
            "revoke of one of two scopes leaves order.read: no obligation",
        );
        self.access(
            b + 13 * HOUR,
            erp,
            u,
            A_LOGISTICS_TRACE,
            call(AAR, "logistics.read revoked 1 h before"),
        );
        self.access(
            b + 14 * HOUR,
            erp,
            u,
            A_ORDER_LIST,
            ok("the scope that was not revoked"),
        );

        let u = self.user();
        self.grant(b + 15 * HOUR, erp, u, S_ORDER | S_REFUND);
        self.access(b + 15 * HOUR + 10 * MIN, erp, u, A_REFUND_LIST, setup());
        self.revoke(
            b + 16 * HOUR,
            erp,
            u,
            S_REFUND,
            None,
            "revoke of one of two scopes: no obligation",
        );
        self.access(
            b + 16 * HOUR,
            erp,
            u,
            A_REFUND_LIST,
            call(AAR, "access at the same millisecond as the revoke"),
        );

        let u = self.user();
        self.grant(b + 17 * HOUR, crm, u, S_ORDER | S_PROFILE);
        self.access(b + 17 * HOUR + 30 * MIN, crm, u, A_INFO_GET, setup());
        // The file has the revoke first; the tie order applies the grant first.
        self.revoke(
            b + 18 * HOUR,
            crm,
            u,
            S_PROFILE,
            None,
            "revoke tied with a re-grant of the same scope; order.read stays: no obligation",
        );
        self.grant(b + 18 * HOUR, crm, u, S_PROFILE);
        self.access(
            b + 18 * HOUR + 10 * MIN,
            crm,
            u,
            A_INFO_GET,
            call(
                AAR,
                "grant and revoke of user.profile at equal time: grant applies first, then revoke",
            ),
        );

        let u = self.user();
        self.grant(b + 20 * HOUR, selfa, u, S_ORDER);
        self.access(b + 21 * HOUR, selfa, u, A_ORDER_LIST, setup());
        self.unsub(
            b + 22 * HOUR,
            selfa,
            u,
            Some("fulfilled"),
            "unsubscribe after access; receipt 20 h later",
        );
        self.access(
            b + 23 * HOUR,
            selfa,
            u,
            A_ORDER_LIST,
            call(AAR, "access 1 h after the unsubscribe (before the receipt)"),
        );
        self.receipt(b + 42 * HOUR, selfa, Some(u), Reason::Unsubscribe);

        let c = t(2, 0, 0);
        let u = self.user();
        self.grant(c + HOUR, erp, u, S_ORDER | S_ITEM);
        self.access(c + 2 * HOUR, erp, u, A_ORDER_LIST, setup());
        self.unsub(
            c + 3 * HOUR,
            erp,
            u,
            Some("fulfilled"),
            "unsubscribe, receipt 2 h later, then a new grant",
        );
        self.receipt(c + 5 * HOUR, erp, Some(u), Reason::Unsubscribe);
        self.grant(c + 8 * HOUR, erp, u, S_ORDER);
        self.access(
            c + 9 * HOUR,
            erp,
            u,
            A_ITEM_LIST,
            call(
                AAR,
                "item.read granted before the unsubscribe, not by the new grant",
            ),
        );
        self.access(
            c + 10 * HOUR,
            erp,
            u,
            A_ORDER_LIST,
            ok("grant after the receipt: not deletion_not_effective"),
        );

        let u = self.user();
        self.grant(e - 2 * DAY, crm, u, S_ORDER);
        self.access(e - 2 * DAY + HOUR, crm, u, A_ORDER_LIST, setup());
        self.unsub(
            e - 6 * HOUR,
            crm,
            u,
            Some("open"),
            "unsubscribe tied with a grant, hours before now: due after now",
        );
        self.grant(e - 6 * HOUR, crm, u, S_ORDER);
        self.access(
            e - 5 * HOUR,
            crm,
            u,
            A_ORDER_LIST,
            call(
                AAR,
                "grant and unsubscribe at equal time: the unsubscribe applies last",
            ),
        );

        let c2 = t(3, 12, 0);
        let u = self.user();
        self.grant(c2, fin, u, S_ORDER);
        self.unsub(
            c2 + 2 * HOUR,
            fin,
            u,
            None,
            "the only access is at the unsubscribe's own time, not before it: no obligation",
        );
        self.access(
            c2 + 2 * HOUR,
            fin,
            u,
            A_ORDER_SEARCH,
            call(AAR, "access at the same millisecond as the unsubscribe"),
        );

        // ---- access_after_termination --------------------------------------
        let tt1 = t(2, 20, 0);
        let (u1, u2) = (self.user(), self.user());
        self.grant(b + 2 * HOUR, term1, u1, S_ORDER | S_LOGISTICS);
        self.grant(b + 2 * HOUR, term1, u2, S_ORDER | S_LOGISTICS);
        self.access(b + 3 * HOUR, term1, u1, A_ORDER_LIST, setup());
        self.access(
            b + 3 * HOUR + 5 * MIN,
            term1,
            u2,
            A_LOGISTICS_TRACE,
            setup(),
        );
        self.terminate(
            tt1,
            term1,
            Some("not_effective"),
            "terminated; all-users receipt 30 h later, then an access",
        );
        self.access(
            tt1,
            term1,
            u1,
            A_ORDER_LIST,
            call(AAT, "access at the same millisecond as the terminate"),
        );
        self.access(
            tt1 + 5 * HOUR,
            term1,
            u2,
            A_LOGISTICS_TRACE,
            call(AAT, "access 5 h after terminate"),
        );
        self.receipt(tt1 + 30 * HOUR, term1, None, Reason::Termination);
        self.access(
            tt1 + 40 * HOUR,
            term1,
            u1,
            A_ORDER_LIST,
            call(AAT | DNE, "after terminate and after the all-users receipt"),
        );

        let tt2 = e - 5 * DAY;
        let u = self.user();
        self.grant(t(0, 6, 0), term2, u, S_ORDER | S_PROFILE);
        self.access(t(0, 7, 0), term2, u, A_INFO_GET, setup());
        self.terminate(
            tt2,
            term2,
            Some("overdue"),
            "terminated about 5 days before now, no receipt",
        );
        self.access(
            tt2 + HOUR,
            term2,
            u,
            A_INFO_GET,
            call(AAT, "access 1 h after terminate"),
        );
        self.access(
            tt2 + 2 * HOUR,
            term2,
            u,
            A_INFO_GET,
            ok("HTTP 404 after terminate is not a data access").status(404),
        );

        let tt3 = e - 132 * HOUR;
        let u = self.user();
        self.grant(t(0, 2, 0), term3, u, S_ORDER);
        self.access(t(0, 3, 0), term3, u, A_ORDER_LIST, setup());
        self.terminate(
            tt3,
            term3,
            Some("fulfilled_late"),
            "self_use app terminated; all-users receipt 75 h later",
        );
        self.receipt(tt3 + 75 * HOUR, term3, None, Reason::Termination);

        // An app registered and terminated without a single access.
        let reg = e - 3 * DAY;
        self.out.plans[still].register_at = reg;
        let p = self.out.plans[still].profile;
        self.push(
            reg,
            NO_META,
            EvKind::App {
                app: still as u32,
                action: AppAction::Register,
                declared: p.declared,
                cats: p.cats,
                export: false,
            },
        );
        self.terminate(
            e - 2 * DAY,
            still,
            None,
            "terminated app that never accessed data: no obligation",
        );

        // ---- undeclared_scope -----------------------------------------------
        let u = self.user();
        self.grant(c + 12 * HOUR, logi, u, S_ORDER | S_ITEM);
        self.access(
            c + 13 * HOUR,
            logi,
            u,
            A_ITEM_LIST,
            call(US, "item.read granted but not declared by the app"),
        );

        let tu = t(2, 6, 0);
        let decl1 = P_ERP.declared & !S_REFUND;
        let cats1 = P_ERP.cats & !C_REFUND;
        let u17 = self.user();
        self.grant(b + HOUR, upd, u17, S_ORDER | S_REFUND);
        self.access(
            b + 2 * HOUR,
            upd,
            u17,
            A_REFUND_LIST,
            ok("refund.read and refund still declared at this time"),
        );
        self.update(
            tu,
            upd,
            decl1,
            cats1,
            false,
            "update drops refund.read and category refund",
        );
        self.access(
            tu + 2 * HOUR,
            upd,
            u17,
            A_REFUND_LIST,
            call(
                US | UC,
                "after the update that dropped refund.read and refund",
            ),
        );
        self.access(
            tu + 3 * HOUR,
            upd,
            u17,
            A_ORDER_LIST,
            ok("scope still declared after the update"),
        );
        let tu2 = t(3, 6, 0);
        let u = self.user();
        self.grant(b + 3 * HOUR, upd, u, S_ORDER | S_PHONE);
        self.access(
            tu2 - SEC,
            upd,
            u,
            A_PHONE_GET,
            call(US, "1 s before the update that declares user.phone"),
        );
        self.update(
            tu2,
            upd,
            decl1 | S_PHONE,
            cats1,
            false,
            "update adds user.phone",
        );
        self.access(
            tu2,
            upd,
            u,
            A_PHONE_GET,
            ok("same millisecond as the update that declares user.phone"),
        );

        let u = self.user();
        self.grant(c + 14 * HOUR, selfa, u, S_ORDER | S_MEMBER);
        self.access(
            c + 15 * HOUR,
            selfa,
            u,
            A_MEMBER_POINTS,
            call(US, "self_use app, member.read not declared"),
        );
        let u = self.user();
        self.grant(c + 15 * HOUR, crm, u, S_ORDER | S_ADDRESS);
        self.access(
            c + 16 * HOUR,
            crm,
            u,
            A_ADDRESS_GET,
            call(US, "user.address granted but not declared (categories are)"),
        );
        let u = self.user();
        self.grant(c + 16 * HOUR, crm, u, S_ORDER | S_ITEM);
        self.access(
            c + 17 * HOUR,
            crm,
            u,
            A_ITEM_GET,
            call(US, "item.read not declared"),
        );

        // ---- undeclared_category ---------------------------------------------
        let u = self.user();
        self.grant(c + 18 * HOUR, logi, u, S_ORDER | S_LOGISTICS);
        self.access(
            c + 19 * HOUR,
            logi,
            u,
            A_ORDER_LIST,
            call(
                UC,
                "order.list returns phone; the app declares order, logistics, address",
            ),
        );
        self.access(
            c + 20 * HOUR,
            logi,
            u,
            A_ORDER_GET,
            call(UC, "order.get returns phone and name"),
        );
        self.access(
            c + 21 * HOUR,
            logi,
            u,
            A_ORDER_SEARCH,
            ok("order.search returns only order"),
        );
        let u = self.user();
        self.grant(c + 22 * HOUR, fin, u, S_ORDER);
        self.access(
            c + 23 * HOUR,
            fin,
            u,
            A_ORDER_LIST,
            call(UC, "finance app declares only order and refund"),
        );

        // ---- cross_border ------------------------------------------------------
        let u = self.user();
        self.grant(c + 2 * HOUR, erp, u, S_ORDER | S_ITEM);
        let ip = self.abroad_ip("US");
        self.access(
            c + 3 * HOUR,
            erp,
            u,
            A_ORDER_LIST,
            call(CB, "personal data to a US caller, app not export-approved").from("US", ip),
        );
        let ip = self.abroad_ip("US");
        self.access(
            c + 3 * HOUR + 5 * MIN,
            erp,
            u,
            A_ITEM_LIST,
            ok("abroad but no personal-data category").from("US", ip),
        );
        let ip = self.abroad_ip("US");
        self.access(
            c + 3 * HOUR + 10 * MIN,
            erp,
            u,
            A_ORDER_LIST,
            ok("abroad but HTTP 403: not a data access")
                .status(403)
                .from("US", ip),
        );
        let u = self.user();
        self.grant(c + 4 * HOUR, crm, u, S_ORDER | S_PHONE);
        let ip = self.abroad_ip("HK");
        self.access(
            c + 5 * HOUR,
            crm,
            u,
            A_PHONE_GET,
            call(CB, "HK is outside the allowed regions (CN)").from("HK", ip),
        );
        let u = self.user();
        self.grant(c + 6 * HOUR, logi, u, S_LOGISTICS);
        let ip = self.abroad_ip("JP");
        self.access(
            c + 7 * HOUR,
            logi,
            u,
            A_LOGISTICS_TRACE,
            call(CB, "JP caller").from("JP", ip),
        );

        let tx = t(4, 0, 0);
        let u26 = self.user();
        self.grant(b + 4 * HOUR, exp, u26, S_ORDER | S_PROFILE);
        let ip = self.abroad_ip("SG");
        self.access(
            tx - 2 * HOUR,
            exp,
            u26,
            A_INFO_GET,
            call(CB, "2 h before export approval").from("SG", ip.clone()),
        );
        self.update(
            tx,
            exp,
            P_CRM.declared,
            P_CRM.cats,
            true,
            "export_approved turns on",
        );
        self.access(
            tx,
            exp,
            u26,
            A_INFO_GET,
            ok("same millisecond as the export approval").from("SG", ip),
        );
        let ip = self.abroad_ip("US");
        self.access(
            tx + HOUR,
            exp,
            u26,
            A_ORDER_LIST,
            ok("after the export approval").from("US", ip),
        );

        // ---- client_id_sharing -------------------------------------------------
        let (u28, u29) = (self.user(), self.user());
        self.grant(b + 5 * HOUR, erp, u28, S_ORDER);
        self.grant(b + 5 * HOUR, crm, u29, S_ORDER | S_PROFILE);
        let h1 = floor_hour(t(2, 10, 0));
        let ip1 = reserved_cn_ip(1);
        self.access(
            h1 + 5 * MIN,
            erp,
            u28,
            A_ORDER_LIST,
            call(CIS, "IP shared with another developer's app in this hour").ip(ip1.clone()),
        );
        self.access(
            h1 + 40 * MIN,
            erp,
            u28,
            A_ORDER_GET,
            call(CIS, "IP shared with another developer's app in this hour").ip(ip1.clone()),
        );
        self.access(
            h1 + 20 * MIN,
            crm,
            u29,
            A_INFO_GET,
            call(CIS, "IP shared with another developer's app in this hour").ip(ip1),
        );

        let (u30, u31, u32) = (self.user(), self.user(), self.user());
        self.grant(b + 6 * HOUR, logi, u30, S_LOGISTICS);
        self.grant(b + 6 * HOUR, fin, u31, S_ORDER);
        self.grant(b + 6 * HOUR, selfa, u32, S_ORDER);
        let h2 = floor_hour(t(4, 3, 0));
        let ip2 = reserved_v6_ip(2);
        self.access(
            h2 + 10 * MIN,
            logi,
            u30,
            A_LOGISTICS_TRACE,
            call(CIS, "IPv6 shared by three developers in one hour").ip(ip2.clone()),
        );
        self.access(
            h2 + 25 * MIN,
            fin,
            u31,
            A_ORDER_SEARCH,
            call(CIS, "IPv6 shared by three developers in one hour").ip(ip2.clone()),
        );
        self.access(
            h2 + 50 * MIN,
            selfa,
            u32,
            A_ORDER_LIST,
            call(CIS, "IPv6 shared by three developers in one hour").ip(ip2),
        );

        let h3 = floor_hour(t(3, 15, 0));
        let ip3 = reserved_cn_ip(3);
        self.access(
            h3 + HOUR - 2,
            erp,
            u28,
            A_ORDER_LIST,
            ok("same IP as the next event but a different clock hour").ip(ip3.clone()),
        );
        self.access(
            h3 + HOUR,
            crm,
            u29,
            A_INFO_GET,
            ok("same IP as the previous event but a different clock hour").ip(ip3),
        );

        let h4 = floor_hour(e - 20 * HOUR);
        let ip4 = reserved_cn_ip(4);
        self.access(
            h4 + MIN,
            exp,
            u26,
            A_INFO_GET,
            call(CIS, "IP shared with another developer's app in this hour").ip(ip4.clone()),
        );
        self.access(
            h4 + 2 * MIN,
            erp,
            u28,
            A_ORDER_LIST,
            call(CIS, "IP shared with another developer's app in this hour").ip(ip4),
        );

        // Two apps of one developer on one IP: allowed.
        let same_dev = (0..w.apps.len()).find_map(|i| {
            (i + 1..w.apps.len()).find_map(|j| {
                let (a, bb) = (&w.apps[i], &w.apps[j]);
                (a.dev == bb.dev
                    && a.role == Role::Plain
                    && bb.role == Role::Plain
                    && a.profile.declared & S_ITEM != 0
                    && bb.profile.declared & S_ITEM != 0)
                    .then_some((i, j))
            })
        });
        if let Some((a1, a2)) = same_dev {
            let u = self.user();
            self.grant(b + 7 * HOUR, a1, u, S_ITEM);
            self.grant(b + 7 * HOUR, a2, u, S_ITEM);
            let h5 = floor_hour(t(2, 14, 0));
            let ip5 = reserved_cn_ip(5);
            self.access(
                h5 + 3 * MIN,
                a1,
                u,
                A_ITEM_LIST,
                ok("two apps of the same developer on one IP").ip(ip5.clone()),
            );
            self.access(
                h5 + 7 * MIN,
                a2,
                u,
                A_ITEM_LIST,
                ok("two apps of the same developer on one IP").ip(ip5),
            );
        }

        // ---- bulk_harvest ----------------------------------------------------
        let hh1 = floor_hour(t(4, 2, 0));
        let hh2 = floor_hour(t(5, 19, 0));
        let pool1 = self.harvest_pool(harv1, 150);
        self.harvest_grants(
            harv1,
            &pool1,
            t(0, 2, 0),
            hh1 - 2 * HOUR,
            S_PHONE | S_PROFILE,
        );
        self.harvest_hour(harv1, &pool1, hh1, A_PHONE_GET, true);
        self.harvest_hour(harv1, &pool1, hh2, A_INFO_GET, true);
        let hh3 = floor_hour(t(3, 22, 0));
        let hh4 = floor_hour(t(4, 20, 0));
        let pool2 = self.harvest_pool(harv2, 120);
        self.harvest_grants(
            harv2,
            &pool2,
            t(0, 2, 0),
            hh3 - 2 * HOUR,
            S_PHONE | S_PROFILE,
        );
        self.harvest_hour(harv2, &pool2, hh3, A_PHONE_GET, true);
        self.harvest_hour(harv2, &pool2[..95], hh4, A_INFO_GET, false);

        // ---- deletion_not_effective -------------------------------------------
        let u = self.user();
        self.grant(b + 8 * HOUR, erp, u, S_ORDER);
        self.access(b + 9 * HOUR, erp, u, A_ORDER_LIST, setup());
        let t1 = t(2, 0, 0);
        self.request(
            t1,
            erp,
            Some(u),
            Reason::UserRequest,
            Some("not_effective"),
            "user asks for deletion; receipt after 10 h; data read again",
        );
        self.receipt(t1 + 10 * HOUR, erp, Some(u), Reason::UserRequest);
        self.access(
            t1 + 20 * HOUR,
            erp,
            u,
            A_ORDER_LIST,
            call(DNE, "grant still active, but the app confirmed deletion"),
        );

        let u = self.user();
        self.grant(b + 8 * HOUR, crm, u, S_ORDER | S_PROFILE);
        self.access(b + 9 * HOUR, crm, u, A_INFO_GET, setup());
        let t1 = t(2, 4, 0);
        self.request(
            t1,
            crm,
            Some(u),
            Reason::UserRequest,
            Some("not_effective"),
            "receipt after 30 h, then a failed call naming the user",
        );
        self.receipt(t1 + 30 * HOUR, crm, Some(u), Reason::UserRequest);
        self.access(
            t1 + 31 * HOUR,
            crm,
            u,
            A_INFO_GET,
            call(DNE, "any status counts: HTTP 404 after the receipt").status(404),
        );

        let tp = e - 30 * HOUR;
        let (u36, u37) = (self.user(), self.user());
        self.grant(t(0, 6, 0), pall, u36, S_ORDER);
        self.grant(t(0, 6, 0), pall, u37, S_ORDER);
        self.access(t(0, 7, 0), pall, u36, A_ORDER_SEARCH, setup());
        self.request(
            tp,
            pall,
            None,
            Reason::PlatformOrder,
            Some("not_effective"),
            "platform orders deletion of every user's data",
        );
        self.receipt(tp + 4 * HOUR, pall, None, Reason::PlatformOrder);
        self.grant(e - 24 * HOUR, pall, u37, S_ORDER);
        self.access(
            e - 22 * HOUR,
            pall,
            u37,
            A_ORDER_SEARCH,
            ok("new grant after the all-users receipt"),
        );
        self.access(
            e - 20 * HOUR,
            pall,
            u36,
            A_ORDER_SEARCH,
            call(DNE, "after the all-users receipt, no new grant"),
        );

        let u = self.user();
        self.grant(b + 10 * HOUR, selfa, u, S_ORDER);
        self.access(b + 11 * HOUR, selfa, u, A_ORDER_LIST, setup());
        self.unsub(
            t(2, 10, 0),
            selfa,
            u,
            Some("not_effective"),
            "unsubscribe, receipt, then an access",
        );
        self.receipt(t(2, 12, 0), selfa, Some(u), Reason::Unsubscribe);
        self.access(
            t(2, 14, 0),
            selfa,
            u,
            A_ORDER_LIST,
            call(AAR | DNE, "after unsubscribe and receipt"),
        );

        // ---- deletion_overdue and obligation states -------------------------------
        let u = self.user();
        self.grant(t(0, 6, 0), erp, u, S_ORDER);
        self.access(t(0, 8, 0), erp, u, A_ORDER_LIST, setup());
        self.request(
            e - 94 * HOUR,
            erp,
            Some(u),
            Reason::UserRequest,
            Some("overdue"),
            "user_request (72 h), no receipt",
        );

        let u = self.user();
        self.grant(t(0, 6, 0), crm, u, S_ORDER | S_PROFILE);
        self.access(t(0, 8, 0), crm, u, A_INFO_GET, setup());
        self.unsub(
            e - 3 * DAY,
            crm,
            u,
            Some("overdue"),
            "unsubscribe (24 h), no receipt",
        );

        let u = self.user();
        self.grant(t(0, 6, 0), logi, u, S_LOGISTICS);
        self.access(t(0, 8, 0), logi, u, A_LOGISTICS_TRACE, setup());
        self.revoke(
            e - 2 * DAY,
            logi,
            u,
            S_LOGISTICS,
            Some("overdue"),
            "revoke of the only scope (24 h), no receipt for this user",
        );
        let u = self.user();
        self.grant(t(0, 6, 0), logi, u, S_ORDER);
        self.receipt_note(
            e - 36 * HOUR,
            logi,
            Some(u),
            Reason::UserRequest,
            "receipt for another user does not close the revoke obligation above",
        );

        let u = self.user();
        self.grant(t(0, 6, 0), selfa, u, S_ORDER);
        self.access(t(0, 8, 0), selfa, u, A_ORDER_LIST, setup());
        self.request(
            e - 3 * DAY,
            selfa,
            Some(u),
            Reason::PlatformOrder,
            Some("fulfilled_late"),
            "platform_order (24 h), receipt after 48 h",
        );
        self.receipt(e - DAY, selfa, Some(u), Reason::PlatformOrder);

        let u = self.user();
        self.grant(t(0, 6, 0), crm, u, S_ORDER);
        self.access(t(0, 9, 0), crm, u, A_ORDER_LIST, setup());
        self.unsub(
            t(1, 1, 0),
            crm,
            u,
            Some("fulfilled_late"),
            "unsubscribe (24 h), receipt after 30 h",
        );
        self.receipt(t(2, 7, 0), crm, Some(u), Reason::Unsubscribe);

        let u = self.user();
        self.grant(t(0, 6, 0), fin, u, S_ORDER);
        self.access(t(0, 9, 0), fin, u, A_ORDER_SEARCH, setup());
        self.request(
            e - 10 * HOUR,
            fin,
            Some(u),
            Reason::PlatformOrder,
            Some("open"),
            "platform_order hours before now: due after now",
        );

        let u = self.user();
        self.grant(t(0, 6, 0), erp, u, S_ORDER);
        self.access(t(0, 9, 0), erp, u, A_ORDER_LIST, setup());
        self.request(
            e - 2 * DAY,
            erp,
            Some(u),
            Reason::UserRequest,
            Some("open"),
            "user_request about 2 days before now: due after now",
        );

        let u = self.user();
        self.grant(t(0, 6, 0), crm, u, S_ORDER);
        self.access(t(0, 9, 0), crm, u, A_ORDER_LIST, setup());
        self.request(
            t(2, 23, 0),
            crm,
            Some(u),
            Reason::UserRequest,
            Some("fulfilled"),
            "receipt at the same millisecond as the request",
        );
        self.receipt(t(2, 23, 0), crm, Some(u), Reason::UserRequest);

        let u = self.user();
        self.grant(t(0, 6, 0), erp, u, S_ORDER);
        self.access(t(0, 9, 0), erp, u, A_ORDER_LIST, setup());
        self.unsub(
            t(2, 2, 0),
            erp,
            u,
            Some("fulfilled"),
            "receipt exactly at due_at (24 h)",
        );
        self.receipt(t(3, 2, 0), erp, Some(u), Reason::Unsubscribe);

        let u = self.user();
        self.grant(t(0, 6, 0), logi, u, S_ORDER | S_LOGISTICS);
        self.access(t(0, 9, 0), logi, u, A_ORDER_SEARCH, setup());
        self.revoke(
            t(2, 3, 0),
            logi,
            u,
            S_ORDER | S_LOGISTICS,
            Some("fulfilled"),
            "revoke of both scopes at once",
        );
        self.receipt(t(2, 9, 0), logi, Some(u), Reason::Revoke);

        let u = self.user();
        self.grant(t(0, 6, 0), erp, u, S_ORDER);
        self.unsub(
            t(2, 0, 0),
            erp,
            u,
            None,
            "unsubscribe without any earlier access: no obligation",
        );

        let u = self.user();
        self.grant(t(0, 6, 0), crm, u, S_ORDER);
        self.access(
            t(0, 9, 0),
            crm,
            u,
            A_ORDER_LIST,
            ok("HTTP 403: not a data access").status(403),
        );
        self.unsub(
            t(2, 1, 0),
            crm,
            u,
            None,
            "only an HTTP 403 before the unsubscribe: no obligation",
        );

        let u = self.user();
        self.request(
            t(2, 2, 0),
            fin,
            Some(u),
            Reason::UserRequest,
            None,
            "request for a user the app never accessed: no obligation",
        );

        for p in &mut self.out.plans {
            p.updates.sort_by_key(|u| u.0);
        }
        self.out
    }

    /// `n` users outside `app`'s normal base, from the normal pool.
    fn harvest_pool(&mut self, app: usize, n: usize) -> Vec<u32> {
        let base = &self.w.apps[app].base;
        let mut all: Vec<u32> = (0..self.w.natural_users as u32)
            .filter(|u| base.binary_search(u).is_err())
            .collect();
        self.rng.shuffle(&mut all);
        all.truncate(n);
        all
    }

    fn harvest_grants(&mut self, app: usize, users: &[u32], from: i64, to: i64, scopes: u16) {
        let step = ((to - from) / users.len() as i64).max(2) & !1;
        for (i, &u) in users.iter().enumerate() {
            self.grant(from + i as i64 * step, app, u, scopes);
        }
    }

    /// One access per user, spread over the clock hour `hour`.
    fn harvest_hour(&mut self, app: usize, users: &[u32], hour: i64, api: u8, flagged: bool) {
        let mut times: Vec<i64> = users
            .iter()
            .map(|_| hour + 2 * self.rng.below(HOUR as u64 / 2) as i64)
            .collect();
        times.sort_unstable();
        let note = if flagged {
            format!(
                "one of {} distinct users read by a harvester in one hour",
                users.len()
            )
        } else {
            format!(
                "{} distinct users in one hour: below the floor of 100",
                users.len()
            )
        };
        for (&u, &tm) in users.iter().zip(&times) {
            let c = if flagged { call(0, &note) } else { ok(&note) };
            self.access(tm, app, u, api, c);
        }
        if flagged {
            self.out.harvests.push((app as u32, hour));
        }
    }
}
