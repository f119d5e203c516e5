//! The platform's catalogue (scopes, data categories, APIs, app profiles) and
//! the generated world: developers with their IPs, apps, users.

use std::collections::HashSet;

use super::fmt::{HOUR, SEC};
use super::rng::{Rng, hash};

/// The scope catalogue; bit `i` of a scope mask is `SCOPES[i]`.
pub const SCOPES: [&str; 8] = [
    "order.read",
    "user.phone",
    "user.address",
    "user.profile",
    "item.read",
    "logistics.read",
    "refund.read",
    "member.read",
];

pub const S_ORDER: u16 = 1 << 0;
pub const S_PHONE: u16 = 1 << 1;
pub const S_ADDRESS: u16 = 1 << 2;
pub const S_PROFILE: u16 = 1 << 3;
pub const S_ITEM: u16 = 1 << 4;
pub const S_LOGISTICS: u16 = 1 << 5;
pub const S_REFUND: u16 = 1 << 6;
pub const S_MEMBER: u16 = 1 << 7;

/// Personal-data categories; bit `i` of a category mask is `CATEGORIES[i]`.
pub const CATEGORIES: [&str; 8] = [
    "order",
    "address",
    "phone",
    "name",
    "nickname",
    "logistics",
    "refund",
    "member",
];

pub const C_ORDER: u16 = 1 << 0;
pub const C_ADDRESS: u16 = 1 << 1;
pub const C_PHONE: u16 = 1 << 2;
pub const C_NAME: u16 = 1 << 3;
pub const C_NICKNAME: u16 = 1 << 4;
pub const C_LOGISTICS: u16 = 1 << 5;
pub const C_REFUND: u16 = 1 << 6;
pub const C_MEMBER: u16 = 1 << 7;
pub const C_ALL: u16 = 0xFF;

/// One gateway API.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub name: &'static str,
    /// Index into [`SCOPES`]; `None` for app-level calls (no user data).
    pub scope: Option<u8>,
    /// Categories returned on success.
    pub cats: u16,
    /// Relative popularity.
    pub weight: u32,
    pub records: (u32, u32),
    pub bytes_per_record: u32,
    pub latency_ms: u32,
}

const fn api(
    name: &'static str,
    scope: Option<u8>,
    cats: u16,
    weight: u32,
    records: (u32, u32),
    bytes_per_record: u32,
    latency_ms: u32,
) -> Api {
    Api {
        name,
        scope,
        cats,
        weight,
        records,
        bytes_per_record,
        latency_ms,
    }
}

pub const A_ORDER_LIST: u8 = 0;
pub const A_ORDER_GET: u8 = 1;
pub const A_ORDER_SEARCH: u8 = 2;
pub const A_PHONE_GET: u8 = 3;
pub const A_ADDRESS_GET: u8 = 4;
pub const A_INFO_GET: u8 = 5;
pub const A_ITEM_LIST: u8 = 6;
pub const A_ITEM_GET: u8 = 7;
pub const A_LOGISTICS_TRACE: u8 = 8;
pub const A_REFUND_LIST: u8 = 9;
pub const A_MEMBER_POINTS: u8 = 10;
/// First app-level API (user_id null, no scope).
pub const A_FIRST_APP_LEVEL: u8 = 11;

/// The API catalogue: the user-data APIs first, then the app-level ones.
pub const APIS: [Api; 14] = [
    api(
        "order.list",
        Some(0),
        C_ORDER | C_ADDRESS | C_PHONE,
        30,
        (1, 50),
        820,
        38,
    ),
    api(
        "order.get",
        Some(0),
        C_ORDER | C_ADDRESS | C_PHONE | C_NAME,
        20,
        (1, 1),
        1240,
        22,
    ),
    api("order.search", Some(0), C_ORDER, 10, (1, 100), 310, 55),
    api("user.phone.get", Some(1), C_PHONE, 5, (1, 1), 64, 12),
    api(
        "user.address.get",
        Some(2),
        C_ADDRESS | C_NAME,
        5,
        (1, 3),
        210,
        14,
    ),
    api(
        "user.info.get",
        Some(3),
        C_NAME | C_NICKNAME,
        8,
        (1, 1),
        150,
        11,
    ),
    api("item.list", Some(4), 0, 15, (1, 100), 520, 30),
    api("item.get", Some(4), 0, 10, (1, 1), 930, 16),
    api(
        "logistics.trace",
        Some(5),
        C_LOGISTICS | C_ADDRESS,
        12,
        (1, 5),
        400,
        45,
    ),
    api(
        "refund.list",
        Some(6),
        C_ORDER | C_REFUND,
        6,
        (1, 20),
        610,
        33,
    ),
    api("member.points.get", Some(7), C_MEMBER, 6, (1, 1), 120, 9),
    api("platform.time.get", None, 0, 5, (1, 1), 40, 3),
    api("item.category.list", None, 0, 3, (1, 200), 90, 20),
    api("app.token.create", None, 0, 2, (1, 1), 180, 25),
];

/// `self_use` or `third_party`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    ThirdParty,
    SelfUse,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AppKind::ThirdParty => "third_party",
            AppKind::SelfUse => "self_use",
        }
    }
}

/// What an app declares and what its normal traffic calls.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub kind: AppKind,
    pub declared: u16,
    pub cats: u16,
    /// Scopes its normal traffic calls; a declared scope outside this set is
    /// never used (and so flagged by `unused_scope` when active).
    pub used: u16,
}

pub const P_ERP: Profile = Profile {
    kind: AppKind::ThirdParty,
    declared: S_ORDER | S_ITEM | S_LOGISTICS | S_REFUND,
    cats: C_ORDER | C_ADDRESS | C_PHONE | C_NAME | C_LOGISTICS | C_REFUND,
    used: S_ORDER | S_ITEM | S_LOGISTICS | S_REFUND,
};
pub const P_CRM: Profile = Profile {
    kind: AppKind::ThirdParty,
    declared: S_ORDER | S_PROFILE | S_MEMBER | S_PHONE,
    cats: C_ORDER | C_ADDRESS | C_PHONE | C_NAME | C_NICKNAME | C_MEMBER,
    used: S_ORDER | S_PROFILE | S_MEMBER,
};
pub const P_LOGI: Profile = Profile {
    kind: AppKind::ThirdParty,
    declared: S_ORDER | S_LOGISTICS,
    cats: C_ORDER | C_LOGISTICS | C_ADDRESS,
    used: S_ORDER | S_LOGISTICS,
};
pub const P_ITEM: Profile = Profile {
    kind: AppKind::ThirdParty,
    declared: S_ITEM,
    cats: 0,
    used: S_ITEM,
};
pub const P_MKT: Profile = Profile {
    kind: AppKind::ThirdParty,
    declared: S_MEMBER | S_PROFILE | S_PHONE | S_ADDRESS,
    cats: C_MEMBER | C_NAME | C_NICKNAME | C_PHONE | C_ADDRESS,
    used: S_MEMBER | S_PROFILE | S_PHONE,
};
pub const P_FIN: Profile = Profile {
    kind: AppKind::ThirdParty,
    declared: S_ORDER | S_REFUND,
    cats: C_ORDER | C_REFUND,
    used: S_ORDER | S_REFUND,
};
pub const P_SELF: Profile = Profile {
    kind: AppKind::SelfUse,
    declared: S_ORDER | S_ITEM | S_REFUND | S_LOGISTICS | S_ADDRESS,
    cats: C_ALL,
    used: S_ORDER | S_ITEM | S_REFUND | S_LOGISTICS | S_ADDRESS,
};

/// The part an app plays in the planted scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    HostErp,
    HostCrm,
    HostLogi,
    HostSelf,
    Harv1,
    Harv2,
    Term1,
    Term2,
    Term3,
    Upd,
    Exp,
    HostItem,
    ExportNatural,
    HostFin,
    PlatformAll,
    Stillborn,
    Plain,
}

/// Roles of apps 0..16, in this order; later apps are `Plain`.
pub const ROLES: [(Role, Profile); 16] = [
    (Role::HostErp, P_ERP),
    (Role::HostCrm, P_CRM),
    (Role::HostLogi, P_LOGI),
    (Role::HostSelf, P_SELF),
    (Role::Harv1, P_MKT),
    (Role::Harv2, P_MKT),
    (Role::Term1, P_ERP),
    (Role::Term2, P_CRM),
    (Role::Term3, P_SELF),
    (Role::Upd, P_ERP),
    (Role::Exp, P_CRM),
    (Role::HostItem, P_ITEM),
    (Role::ExportNatural, P_ERP),
    (Role::HostFin, P_FIN),
    (Role::PlatformAll, P_FIN),
    (Role::Stillborn, P_ITEM),
];

/// Apps needed by the scenarios.
pub const MIN_APPS: usize = ROLES.len();
/// Users kept out of every app's normal user base, for the scenarios.
pub const RESERVED_USERS: usize = 64;
/// Enough users for the reserved ones, the harvests and the normal bases.
pub const MIN_USERS: usize = 400;
/// Harvester apps' normal hours never see more distinct users than this.
pub const HARVESTER_SESSION_CAP: usize = 4;
/// No app-hour of normal traffic sees more distinct users than this, so only
/// planted hours can reach the `bulk_harvest` floor of 100.
pub const SESSION_CAP: usize = 45;

#[derive(Debug, Clone)]
pub struct Developer {
    pub id: String,
    /// Server IPs in mainland China.
    pub ips_cn: Vec<String>,
    /// Servers abroad, with their region (used by export-approved apps).
    pub ips_abroad: Vec<(String, &'static str)>,
}

#[derive(Debug, Clone)]
pub struct App {
    pub id: String,
    pub dev: usize,
    pub role: Role,
    pub profile: Profile,
    pub export_at_register: bool,
    pub register_at: i64,
    /// Share of normal traffic.
    pub weight: f64,
    pub session_cap: usize,
    /// Indices of the users in its normal user base.
    pub base: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct World {
    pub start: i64,
    pub end: i64,
    pub devs: Vec<Developer>,
    pub apps: Vec<App>,
    pub users: Vec<String>,
    /// Users `0..natural_users` may be in normal user bases; the rest are reserved.
    pub natural_users: usize,
}

const CN_PREFIXES: [&str; 6] = ["47.96", "47.98", "120.55", "39.104", "101.37", "121.40"];
const ABROAD: [(&str, &str); 5] = [
    ("US", "34"),
    ("SG", "43"),
    ("HK", "119"),
    ("JP", "18"),
    ("DE", "3"),
];

/// Reserved (never used by normal traffic) IPs for the scenarios.
pub fn reserved_cn_ip(n: u32) -> String {
    format!("58.217.{}.{}", 10 + n / 200, 20 + n % 200)
}
pub fn reserved_v6_ip(n: u32) -> String {
    format!("2408:8207:{:x}:7c1::{:x}", 0x4a0 + n, 0x15 + n)
}
pub fn reserved_abroad_ip(region: &str, n: u32) -> String {
    let first = match region {
        "US" => 52,
        "HK" => 203,
        "SG" => 13,
        "JP" => 54,
        _ => 35,
    };
    format!("{first}.{}.{}.{}", 77 + n / 250, 11 + n % 200, 9 + n % 240)
}

impl World {
    /// Builds developers, apps and users. `natural_events` sizes sessions.
    pub fn build(
        seed: u64,
        users: usize,
        apps: usize,
        start: i64,
        days: u32,
        natural_events: u64,
    ) -> World {
        let mut rng = Rng::new(seed, 1);
        let end = start + i64::from(days) * 24 * HOUR;

        // Users: `u` + 10 digits, unique by construction.
        let users: Vec<String> = (0..users as u64)
            .map(|i| {
                format!(
                    "u{}",
                    2_000_000_000 + i * 7_919 + hash(&[seed, 11, i]) % 7_919
                )
            })
            .collect();
        let natural_users = users.len() - RESERVED_USERS;

        // Developers and apps.
        let mut dev_ids = HashSet::new();
        let mut app_ids = HashSet::new();
        let mut ip_counter = 0u64;
        let mut abroad_counter = 0u64;
        let mut devs: Vec<Developer> = Vec::new();
        let mut new_dev = |rng: &mut Rng, devs: &mut Vec<Developer>| -> usize {
            let id = loop {
                let id = format!("dev_{:08x}", rng.next_u64() as u32);
                if dev_ids.insert(id.clone()) {
                    break id;
                }
            };
            let v6 = rng.chance(0.15);
            let n_cn = rng.range(2, 4) as usize;
            let ips_cn = (0..n_cn)
                .map(|k| {
                    let n = ip_counter;
                    ip_counter += 1;
                    if v6 && k == 0 {
                        format!(
                            "240e:3a1:{:x}:{:x}::{:x}",
                            0x100 + n / 4096,
                            n % 4096,
                            2 + k
                        )
                    } else {
                        let p = CN_PREFIXES[(n % 6) as usize];
                        let m = n / 6;
                        format!("{p}.{}.{}", m / 254 % 254 + 1, m % 254 + 1)
                    }
                })
                .collect();
            let n_abroad = rng.range(1, 2) as usize;
            let ips_abroad = (0..n_abroad)
                .map(|_| {
                    let n = abroad_counter;
                    abroad_counter += 1;
                    let (region, first) = ABROAD[(n % 5) as usize];
                    let m = n / 5;
                    (
                        format!(
                            "{first}.{}.{}.{}",
                            100 + m / 62_500 % 100,
                            m / 250 % 250 + 1,
                            m % 250 + 1
                        ),
                        region,
                    )
                })
                .collect();
            devs.push(Developer {
                id,
                ips_cn,
                ips_abroad,
            });
            devs.len() - 1
        };

        let plain_profiles: [(Profile, u32); 7] = [
            (P_ERP, 30),
            (P_CRM, 20),
            (P_LOGI, 15),
            (P_ITEM, 10),
            (P_MKT, 10),
            (P_FIN, 10),
            (P_SELF, 5),
        ];
        let mut list: Vec<App> = Vec::with_capacity(apps);
        for i in 0..apps {
            let (role, profile) = if i < ROLES.len() {
                ROLES[i]
            } else {
                let total: u32 = plain_profiles.iter().map(|p| p.1).sum();
                let mut r = rng.below(u64::from(total)) as u32;
                let mut chosen = P_ERP;
                for (p, w) in plain_profiles {
                    if r < w {
                        chosen = p;
                        break;
                    }
                    r -= w;
                }
                (Role::Plain, chosen)
            };
            // Scenario apps have developers of their own; later apps sometimes
            // belong to a developer who already has one (sharing its servers).
            let dev = if i >= ROLES.len() && rng.chance(0.35) {
                list[rng.below(i as u64) as usize].dev
            } else {
                new_dev(&mut rng, &mut devs)
            };
            let id = loop {
                let id = format!("app_{:012x}", rng.next_u64() & 0xFFFF_FFFF_FFFF);
                if app_ids.insert(id.clone()) {
                    break id;
                }
            };
            let export = role == Role::ExportNatural || (role == Role::Plain && rng.chance(0.05));
            list.push(App {
                id,
                dev,
                role,
                profile,
                export_at_register: export,
                register_at: start + SEC + i as i64 * 200,
                weight: 0.0,
                session_cap: 1,
                base: Vec::new(),
            });
        }

        // Traffic weights: Zipf over a random ranking; harvesters stay small.
        let mut ranks: Vec<usize> = (0..apps).collect();
        rng.shuffle(&mut ranks);
        for (app, rank) in list.iter_mut().zip(ranks) {
            app.weight = 1.0 / ((rank + 1) as f64).powf(0.9);
        }
        let others: f64 = list
            .iter()
            .filter(|a| !matches!(a.role, Role::Harv1 | Role::Harv2 | Role::Stillborn))
            .map(|a| a.weight)
            .sum();
        let hours = f64::from(days) * 24.0;
        for app in &mut list {
            match app.role {
                Role::Harv1 | Role::Harv2 => app.weight = others * 0.006,
                Role::Stillborn => app.weight = 0.0,
                _ => {}
            }
        }
        let total: f64 = list.iter().map(|a| a.weight).sum();
        for app in &mut list {
            let per_hour = natural_events as f64 * app.weight / total / hours;
            let cap = if matches!(app.role, Role::Harv1 | Role::Harv2) {
                HARVESTER_SESSION_CAP
            } else {
                SESSION_CAP
            };
            app.session_cap = ((per_hour / 5.0).round() as usize).clamp(2, cap);
        }

        // Normal user bases.
        let mut pool: Vec<u32> = (0..natural_users as u32).collect();
        let max_w = list.iter().map(|a| a.weight).fold(0.0, f64::max);
        for app in &mut list {
            let size = match app.role {
                Role::Stillborn => 0,
                Role::Harv1 | Role::Harv2 => 12,
                _ => {
                    let frac = 0.05 + 0.55 * app.weight / max_w;
                    ((natural_users as f64 * frac) as usize).clamp(12, natural_users)
                }
            };
            // Partial Fisher-Yates: the first `size` of a fresh shuffle.
            for k in 0..size {
                let j = k + rng.below((pool.len() - k) as u64) as usize;
                pool.swap(k, j);
            }
            let mut base = pool[..size].to_vec();
            base.sort_unstable();
            app.base = base;
        }
        World {
            start,
            end,
            devs,
            apps: list,
            users,
            natural_users,
        }
    }

    pub fn app_of_role(&self, role: Role) -> usize {
        self.apps
            .iter()
            .position(|a| a.role == role)
            .expect("role app exists")
    }
}
