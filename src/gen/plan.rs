//! The planned events (everything except normal API traffic, which is drawn
//! while simulating) and the bookkeeping they refer to: pairs (app, user),
//! event ids, scenario notes and expectations.

use std::collections::HashMap;

use super::fmt::uuid_string;
use super::model::Profile;
use super::out::Topic;
use super::rng::{hash, mix64};

/// Rule ids of SPEC section 3, as bits of a mask.
pub const RULES: [&str; 11] = [
    "scope_not_granted",
    "access_after_revocation",
    "access_after_termination",
    "undeclared_scope",
    "undeclared_category",
    "cross_border",
    "client_id_sharing",
    "bulk_harvest",
    "deletion_not_effective",
    "deletion_overdue",
    "unused_scope",
];
pub const SNG: u16 = 1 << 0;
pub const AAR: u16 = 1 << 1;
pub const AAT: u16 = 1 << 2;
pub const US: u16 = 1 << 3;
pub const UC: u16 = 1 << 4;
pub const CB: u16 = 1 << 5;
pub const CIS: u16 = 1 << 6;
pub const BH: u16 = 1 << 7;
pub const DNE: u16 = 1 << 8;
pub const DO: u16 = 1 << 9;
pub const UNUSED: u16 = 1 << 10;

pub fn rule_names(mask: u16) -> Vec<&'static str> {
    (0..RULES.len())
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| RULES[i])
        .collect()
}

/// "Not a time": before everything.
pub const NEVER: i64 = i64::MIN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantAction {
    Grant,
    Revoke,
    Unsubscribe,
}

impl GrantAction {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantAction::Grant => "grant",
            GrantAction::Revoke => "revoke",
            GrantAction::Unsubscribe => "unsubscribe",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppAction {
    Register,
    Update,
    Terminate,
}

impl AppAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AppAction::Register => "register",
            AppAction::Update => "update",
            AppAction::Terminate => "terminate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelKind {
    Request,
    Receipt,
}

/// Why data must be deleted, with the default deadline (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UserRequest,
    PlatformOrder,
    Unsubscribe,
    Revoke,
    Termination,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UserRequest => "user_request",
            Reason::PlatformOrder => "platform_order",
            Reason::Unsubscribe => "unsubscribe",
            Reason::Revoke => "revoke",
            Reason::Termination => "termination",
        }
    }

    /// The default deadline in milliseconds.
    pub fn deadline_ms(self) -> i64 {
        use super::fmt::HOUR;
        match self {
            Reason::UserRequest | Reason::Termination => 72 * HOUR,
            Reason::PlatformOrder | Reason::Unsubscribe | Reason::Revoke => 24 * HOUR,
        }
    }
}

/// A 128-bit event id; unique per topic by construction (the high half is a
/// bijection of a per-topic counter).
pub type EventId = (u64, u64);

pub fn id_string(id: EventId) -> String {
    uuid_string(id.0, id.1)
}

/// Event-id allocator, one counter per topic.
#[derive(Debug, Clone)]
pub struct Ids {
    key: [u64; 4],
    next: [u64; 4],
}

impl Ids {
    pub fn new(seed: u64) -> Self {
        Self {
            key: [0, 1, 2, 3].map(|t| hash(&[seed, 0x1d5, t])),
            next: [0; 4],
        }
    }

    #[inline]
    pub fn next(&mut self, topic: Topic) -> EventId {
        let t = topic.index();
        let c = self.next[t];
        self.next[t] += 1;
        let hi = mix64(c.wrapping_add(self.key[t]));
        (hi, mix64(hi ^ self.key[t].rotate_left(17)))
    }
}

/// Index into [`Plan::metas`]; `NO_META` for normal traffic.
pub type MetaId = u32;
pub const NO_META: MetaId = u32::MAX;

/// What a planted event is for.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub note: String,
    /// For accesses: the event-level rules it must break (exactly).
    pub expect_rules: u16,
    /// For events that may start an obligation: `Some(None)` = none must
    /// arise, `Some(Some(state))` = one in that state at the suggested now.
    pub expect_obligation: Option<Option<&'static str>>,
    /// Listed in `expected_clean`: an edge case that must not be flagged.
    pub clean: bool,
}

#[derive(Debug, Clone)]
pub enum EvKind {
    App {
        app: u32,
        action: AppAction,
        declared: u16,
        cats: u16,
        export: bool,
    },
    Grant {
        pair: u32,
        action: GrantAction,
        scopes: u16,
    },
    Deletion {
        app: u32,
        user: Option<u32>,
        kind: DelKind,
        reason: Reason,
    },
    Access {
        app: u32,
        user: Option<u32>,
        pair: Option<u32>,
        api: u8,
        status: u16,
        region: &'static str,
        ip: Box<str>,
    },
}

#[derive(Debug, Clone)]
pub struct Ev {
    pub time: i64,
    /// Creation order; also the order of lines with equal time in a file.
    pub seq: u32,
    pub id: EventId,
    pub meta: MetaId,
    /// Carries unknown extra fields (the ingester must ignore them).
    pub extra: bool,
    pub kind: EvKind,
}

impl Ev {
    /// Order of application at equal time: the registry first, then grants
    /// in the SPEC's tie order (grant, revoke, unsubscribe), then deletions,
    /// then accesses (which see everything at or before their time).
    pub fn rank(&self) -> u8 {
        match &self.kind {
            EvKind::App { .. } => 0,
            EvKind::Grant { action, .. } => match action {
                GrantAction::Grant => 1,
                GrantAction::Revoke => 2,
                GrantAction::Unsubscribe => 3,
            },
            EvKind::Deletion { kind, .. } => match kind {
                DelKind::Request => 4,
                DelKind::Receipt => 5,
            },
            EvKind::Access { .. } => 6,
        }
    }

    pub fn topic(&self) -> Topic {
        match &self.kind {
            EvKind::App { .. } => Topic::Apps,
            EvKind::Grant { .. } => Topic::Grants,
            EvKind::Deletion { .. } => Topic::Deletions,
            EvKind::Access { .. } => Topic::ApiAccess,
        }
    }
}

/// State of one (app, user) pair, updated as events are applied.
#[derive(Debug, Clone)]
pub struct PairState {
    pub app: u32,
    pub user: u32,
    /// Active scopes (SPEC: grants minus later revokes, cleared by unsubscribe).
    pub active: u16,
    /// Scopes ever granted so far.
    pub ever: u16,
    pub last_grant: i64,
    pub last_receipt: i64,
    /// First data access (2xx, user set); `i64::MAX` if none.
    pub first_access: i64,
}

/// All pairs: normal user bases first (app by app), then scenario pairs.
#[derive(Debug, Default)]
pub struct Pairs {
    pub states: Vec<PairState>,
    pub index: HashMap<(u32, u32), u32>,
    /// First pair index of each app's normal base.
    pub base_start: Vec<u32>,
    /// Number of normal-base pairs (scenario pairs come after).
    pub natural: u32,
}

impl Pairs {
    pub fn get_or_add(&mut self, app: u32, user: u32) -> u32 {
        if let Some(&i) = self.index.get(&(app, user)) {
            return i;
        }
        let i = self.states.len() as u32;
        self.states.push(PairState {
            app,
            user,
            active: 0,
            ever: 0,
            last_grant: NEVER,
            last_receipt: NEVER,
            first_access: i64::MAX,
        });
        self.index.insert((app, user), i);
        i
    }
}

/// An app's planned lifecycle, known before normal traffic is drawn.
#[derive(Debug, Clone)]
pub struct AppPlan {
    pub profile: Profile,
    pub register_at: i64,
    /// (time, declared scopes, declared categories, export_approved).
    pub updates: Vec<(i64, u16, u16, bool)>,
    pub terminate_at: Option<i64>,
    /// Normal user stories (grants, revokes, ...) end before this time, so
    /// they never meet a termination or an all-users deletion.
    pub story_cutoff: i64,
}

impl AppPlan {
    /// Declared scopes at `t` (latest register/update at or before `t`).
    pub fn declared_at(&self, t: i64) -> u16 {
        self.updates
            .iter()
            .rfind(|u| u.0 <= t)
            .map_or(self.profile.declared, |u| u.1)
    }
}
