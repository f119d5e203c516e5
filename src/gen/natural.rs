//! Normal platform life outside the API traffic: app registrations and each
//! normal user's story with each app (grant, maybe a revoke, maybe an
//! unsubscribe or a deletion request answered on time by a receipt, maybe a
//! new grant). Stories are built so that they never break a rule: receipts
//! come within the deadline (or the obligation is still open at the end),
//! and nothing names a user after a receipt except a new grant.

use super::fmt::{DAY, HOUR, MIN};
use super::model::{Role, World};
use super::out::Topic;
use super::plan::*;
use super::rng::Rng;

/// Appends registrations and user stories to `evs`.
pub fn build(
    w: &World,
    plans: &[AppPlan],
    pairs: &Pairs,
    ids: &mut Ids,
    seq: &mut u32,
    seed: u64,
    evs: &mut Vec<Ev>,
) {
    let mut rng = Rng::new(seed, 4);
    let mut push = |evs: &mut Vec<Ev>, rng: &mut Rng, time: i64, kind: EvKind| {
        debug_assert!(time % 2 == 0);
        let ev = Ev {
            time,
            seq: *seq,
            id: (0, 0),
            meta: NO_META,
            extra: false,
            kind,
        };
        let id = ids.next(ev.topic());
        *seq += 1;
        let extra = ev.topic() == Topic::Grants && rng.chance(0.01);
        evs.push(Ev { id, extra, ..ev });
    };
    let even = |t: i64| t & !1;

    for (a, app) in w.apps.iter().enumerate() {
        if app.role == Role::Stillborn {
            continue;
        }
        let plan = &plans[a];
        push(
            evs,
            &mut rng,
            app.register_at,
            EvKind::App {
                app: a as u32,
                action: AppAction::Register,
                declared: app.profile.declared,
                cats: app.profile.cats,
                export: app.export_at_register,
            },
        );
        let limit = plan.story_cutoff;
        // Apps whose stories are cut by a termination or an all-users
        // deletion: an action whose receipt would fall after the cut is dropped.
        let strict = limit < w.end - HOUR;
        for local in 0..app.base.len() {
            let pair = pairs.base_start[a] + local as u32;
            let first = w.start + 5 * MIN;
            let g0 = even(if rng.chance(0.45) {
                first + rng.range(0, 8 * HOUR)
            } else {
                rng.range(first, (w.end - 12 * HOUR).max(first + 1))
            });
            if g0 >= limit {
                continue;
            }
            let declared = plan.declared_at(g0);
            let mut scopes = declared;
            if scopes.count_ones() >= 2 && rng.chance(0.15) {
                let bits: Vec<u16> = (0..16)
                    .map(|i| 1u16 << i)
                    .filter(|b| scopes & b != 0)
                    .collect();
                scopes &= !*rng.pick(&bits);
            }
            push(
                evs,
                &mut rng,
                g0,
                EvKind::Grant {
                    pair,
                    action: GrantAction::Grant,
                    scopes,
                },
            );
            let mut cur = g0;

            // A partial revoke (keeps at least one scope): no obligation.
            if scopes.count_ones() >= 2 && rng.chance(0.06) {
                let t = even(cur + rng.range(HOUR, 3 * DAY));
                if t < limit {
                    let bits: Vec<u16> = (0..16)
                        .map(|i| 1u16 << i)
                        .filter(|b| scopes & b != 0)
                        .collect();
                    let bit = *rng.pick(&bits);
                    push(
                        evs,
                        &mut rng,
                        t,
                        EvKind::Grant {
                            pair,
                            action: GrantAction::Revoke,
                            scopes: bit,
                        },
                    );
                    scopes &= !bit;
                    cur = t;
                }
            }

            // At most one ending: revoke of everything, unsubscribe, or a deletion request.
            let roll = rng.unit();
            let ending = if roll < 0.02 {
                Some(GrantAction::Revoke)
            } else if roll < 0.07 {
                Some(GrantAction::Unsubscribe)
            } else if roll < 0.085 {
                None // deletion request
            } else {
                continue;
            };
            let mut t = even(cur + rng.range(2 * HOUR, 4 * DAY));
            let (delay, reason) = match ending {
                Some(GrantAction::Revoke) => (rng.range(HOUR, 20 * HOUR), Reason::Revoke),
                Some(_) => (rng.range(HOUR, 20 * HOUR), Reason::Unsubscribe),
                None => (rng.range(2 * HOUR, 60 * HOUR), Reason::UserRequest),
            };
            if t + reason.deadline_ms() == w.end {
                t -= 2; // never due exactly at the suggested evaluation time
            }
            if t >= limit {
                continue;
            }
            let receipt = even(t + delay);
            let receipt_in = receipt < limit;
            if strict && !receipt_in {
                continue;
            }
            match ending {
                Some(action) => push(
                    evs,
                    &mut rng,
                    t,
                    EvKind::Grant {
                        pair,
                        action,
                        scopes,
                    },
                ),
                None => {
                    let user = Some(pairs.states[pair as usize].user);
                    push(
                        evs,
                        &mut rng,
                        t,
                        EvKind::Deletion {
                            app: a as u32,
                            user,
                            kind: DelKind::Request,
                            reason,
                        },
                    );
                }
            }
            if !receipt_in {
                continue;
            }
            let user = Some(pairs.states[pair as usize].user);
            push(
                evs,
                &mut rng,
                receipt,
                EvKind::Deletion {
                    app: a as u32,
                    user,
                    kind: DelKind::Receipt,
                    reason,
                },
            );
            // Some come back after an unsubscribe or a full revoke.
            if ending.is_some() && rng.chance(0.3) {
                let t = even(receipt + rng.range(HOUR, 2 * DAY));
                if t < limit {
                    let scopes = plan.declared_at(t);
                    push(
                        evs,
                        &mut rng,
                        t,
                        EvKind::Grant {
                            pair,
                            action: GrantAction::Grant,
                            scopes,
                        },
                    );
                }
            }
        }
    }
}
