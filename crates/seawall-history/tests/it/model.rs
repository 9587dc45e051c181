//! Histories of simulated correct systems: every operation takes effect at
//! one instant between its invoke and its completion (or, ended `info`,
//! perhaps not at all), so the checker must find nothing in them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use seawall_history::{FinalState, Options, check};
use serde_json::{Value, json};

use crate::support::{Lines, START};

/// One step of one client.
#[derive(Debug, Clone)]
struct Step {
    process: usize,
    action: u8,
    gap_ms: u64,
    duration_ms: u64,
    /// Where in its interval the operation takes effect, in percent.
    at_percent: u64,
    /// 0..=6 ok, 7..=8 info, 9 fail where a client may choose.
    ending: u8,
    /// For `info`: whether it took effect.
    applied: bool,
    user: i64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..4_usize,
        0..7_u8,
        0..15_u64,
        1..25_u64,
        0..=100_u64,
        0..10_u8,
        any::<bool>(),
        1..6_i64,
    )
        .prop_map(
            |(process, action, gap_ms, duration_ms, at_percent, ending, applied, user)| Step {
                process,
                action,
                gap_ms,
                duration_ms,
                at_percent,
                ending,
                applied,
                user,
            },
        )
}

/// An operation scheduled: its step, its interval and its instant.
struct Scheduled {
    step: Step,
    index: usize,
    from: u64,
    to: u64,
    /// µs from the start.
    instant: u64,
}

const LIMIT: usize = 3;
const WINDOW_MS: u64 = 40;
const STOCK: i64 = 5;
const QUANTITY: i64 = 4;
const LEASE_MS: u64 = 500;

/// What the simulated system holds.
#[derive(Default)]
struct System {
    register: Option<i64>,
    versions: i64,
    jobs: u64,
    outbox: Vec<Value>,
    job_states: Vec<Value>,
    balances: BTreeMap<i64, i64>,
    ledgers: BTreeMap<i64, Vec<Value>>,
    admitted: Vec<u64>,
    units: i64,
    orders: Vec<Value>,
    coupons: Vec<Value>,
    holders: HashMap<i64, ()>,
    /// When worker-1 was killed, ms from the start.
    kills: Vec<u64>,
}

/// The completion's type and value of one operation applied at its instant.
fn apply(system: &mut System, op: &Scheduled) -> (&'static str, Value, Value) {
    let step = &op.step;
    let info = (7..=8).contains(&step.ending);
    let refused = step.ending == 9;
    // Info operations that did not take effect leave the system alone.
    let takes_effect = !refused && (!info || step.applied);
    let ending = |ok: Value| -> (&'static str, Value) {
        if info {
            ("info", json!({"timeout": true}))
        } else if refused {
            ("fail", json!({"status": 503}))
        } else {
            ("ok", ok)
        }
    };
    let (input, (kind, reply)) = match step.action {
        // Writes come from process 0 only: one writer per key.
        0 if step.process == 0 => {
            system.versions += 1;
            let version = system.versions;
            if takes_effect {
                system.register = Some(version);
            }
            (json!({"key": "k", "value": version}), ending(json!({})))
        }
        0 | 1 => {
            let read = system.register;
            let (kind, reply) = if info {
                ("info", json!({}))
            } else {
                ("ok", json!({"value": read}))
            };
            (json!({"key": "k"}), (kind, reply))
        }
        2 => {
            let key = format!("q-{}", op.index);
            system.jobs += 1;
            let job = format!("notification:{}", system.jobs);
            if takes_effect {
                system
                    .outbox
                    .push(json!({"job": job, "idempotency_key": key}));
                // Some jobs run twice: worker-1 is killed as it writes,
                // and worker-2 runs the job again once the lease the
                // queue saw run out.
                if step.user == 1 {
                    let written = (START + op.instant) / 1000;
                    let last = system.outbox.len() - 1;
                    system.outbox[last]["worker"] = json!("worker-1");
                    system.outbox[last]["at_ms"] = json!(written);
                    system
                        .outbox
                        .push(json!({"job": job, "idempotency_key": key,
                        "worker": "worker-2", "at_ms": written + LEASE_MS}));
                    system
                        .job_states
                        .push(json!({"job": job, "runs": 2, "stalls": 1}));
                    system.kills.push(op.instant / 1000);
                }
            }
            (
                json!({"queue": "notification", "key": key}),
                ending(json!({"job": job})),
            )
        }
        3 => {
            let key = format!("p-{}", op.index);
            let amount = if step.gap_ms.is_multiple_of(3) {
                -7
            } else {
                10
            };
            let balance = system.balances.entry(step.user).or_default();
            let refused_here = refused || *balance + amount < 0;
            let input = json!({"user": step.user, "key": key, "amount": amount});
            if refused_here {
                (input, ("fail", json!({"status": 409})))
            } else {
                if !info || step.applied {
                    *balance += amount;
                    let ledger = system.ledgers.entry(step.user).or_default();
                    ledger.push(json!({"version": ledger.len() + 1, "delta": amount, "idempotency_key": key}));
                }
                let balance = *balance;
                (input, ending(json!({"balance": balance})))
            }
        }
        4 => {
            let window = WINDOW_MS * 1000;
            let recent = system
                .admitted
                .iter()
                .filter(|&&at| at + window > op.instant)
                .count();
            let admitted = recent < LIMIT;
            if admitted {
                system.admitted.push(op.instant);
            }
            let input = json!({"key": "user:1", "limit": LIMIT, "window_ms": WINDOW_MS});
            let kind = if info { "info" } else { "ok" };
            (input, (kind, json!({"admitted": admitted})))
        }
        5 => {
            let input = json!({"sale": 1, "user": step.user});
            if refused || system.units == STOCK {
                (input, ("fail", json!({"status": 409})))
            } else {
                let order = format!("O{}", op.index);
                if !info || step.applied {
                    system.units += 1;
                    system
                        .orders
                        .push(json!({"id": order, "unit": system.units, "user_id": step.user}));
                }
                (input, ending(json!({"order": order, "unit": system.units})))
            }
        }
        _ => {
            let input = json!({"campaign": 1, "user": step.user});
            let issued = i64::try_from(system.coupons.len()).unwrap_or(i64::MAX);
            if refused || issued == QUANTITY || system.holders.contains_key(&step.user) {
                (input, ("fail", json!({"status": 409})))
            } else {
                let code = format!("C{}", op.index);
                if !info || step.applied {
                    system.holders.insert(step.user, ());
                    system
                        .coupons
                        .push(json!({"code": code, "number": issued + 1, "user_id": step.user}));
                }
                (input, ending(json!({"coupon": code})))
            }
        }
    };
    (kind, input, reply)
}

fn workload_of(step: &Step) -> (&'static str, &'static str) {
    match step.action {
        0 if step.process == 0 => ("cache", "write"),
        0 | 1 => ("cache", "read"),
        2 => ("queue", "enqueue"),
        3 => ("points", "change"),
        4 => ("ratelimit", "check"),
        5 => ("sale", "order"),
        _ => ("coupon", "issue"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn histories_of_a_correct_system_have_no_anomalies(steps in prop::collection::vec(step(), 1..120)) {
        let mut clocks = [0_u64; 4];
        let mut scheduled: Vec<Scheduled> = steps
            .into_iter()
            .enumerate()
            .map(|(index, step)| {
                let from = clocks[step.process] + step.gap_ms;
                let to = from + step.duration_ms;
                clocks[step.process] = to;
                let instant = from * 1000 + step.duration_ms * 1000 * step.at_percent / 100;
                Scheduled { step, index, from, to, instant }
            })
            .collect();
        scheduled.sort_by_key(|op| op.instant);

        let mut system = System::default();
        let mut lines = Lines::default();
        for op in &scheduled {
            let (workload, name) = workload_of(&op.step);
            let (kind, input, reply) = apply(&mut system, op);
            lines.op(&format!("client-{}", op.step.process), workload, name, op.from, input, kind, op.to, reply);
        }
        for &at in &system.kills {
            lines.fault(at, "kill", json!({"host": "worker-1"}));
        }
        let accounts: Vec<Value> = system
            .balances
            .iter()
            .map(|(user, balance)| json!({
                "user_id": user,
                "balance": balance,
                "ledger": system.ledgers.get(user).cloned().unwrap_or_default(),
            }))
            .collect();
        let state = json!({
            "queue": {
                "queues": {"notification": {"lease_ms": LEASE_MS, "masters": ["redis-1"]}},
                "rows": system.outbox,
                "jobs": system.job_states,
            },
            "sale": [{"id": 1, "stock": STOCK, "per_user": 100, "remaining": STOCK - system.units, "orders": system.orders}],
            "coupon": [{"id": 1, "quantity": QUANTITY, "per_user": 1, "coupons": system.coupons}],
            "points": accounts,
            "cache": {"k": system.register},
        });
        let state = FinalState::parse("state.json", &state.to_string()).expect("a valid state");
        let strict = Options::new().stale_window(Duration::ZERO);
        let report = check(&lines.history(), &state, &strict).expect("every section");
        prop_assert_eq!(report.anomalies(), 0, "{}\n{}", report, lines.text());
    }
}
