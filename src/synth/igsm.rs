//! `igsm`: word problems in the style of iGSM (Physics of Language Models, part 2.1). A random
//! dependency graph of named quantities ("the number of backpacks in Maple School"), each given or
//! defined from others with `+ - *` modulo a small prime; the question asks for one quantity. The
//! statements are shuffled, distractor quantities that the answer does not need are mixed in, and the
//! reference solution computes exactly the needed quantities in dependency order, one step each.
//! `ops` counts the operations of that solution, so train and out-of-distribution splits can differ in
//! difficulty.

use serde::Serialize;

use super::{Rng, SynthConfig};
use crate::dataset::{Calc, Problem, Step};
use crate::formats::domain::Domain;

const PLACES: [&str; 24] = [
    "Maple School",
    "Pine Hill Library",
    "Riverside Zoo",
    "Oakwood Mall",
    "Cedar Park",
    "Harbor Bakery",
    "Sunset Farm",
    "Granite Museum",
    "Willow Clinic",
    "Lakeside Camp",
    "Summit Lab",
    "Elm Street Shop",
    "Birch Theater",
    "Coral Aquarium",
    "Meadow Garden",
    "Falcon Airport",
    "Ivy College",
    "Copper Mine",
    "Juniper Hotel",
    "Aspen Station",
    "Marble Court",
    "Orchard Market",
    "Quartz Studio",
    "Hazel Gym",
];
const THINGS: [&str; 24] = [
    "backpacks",
    "pencils",
    "lamps",
    "chairs",
    "crates",
    "baskets",
    "boxes",
    "bottles",
    "tickets",
    "keys",
    "ropes",
    "tables",
    "kites",
    "drums",
    "maps",
    "coins",
    "hammers",
    "candles",
    "plates",
    "shells",
    "buckets",
    "flags",
    "brushes",
    "ladders",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Def {
    Given,
    Add(usize, usize),
    Sub(usize, usize),
    Mul(usize, usize),
    AddConst(usize, u64),
    MulConst(usize, u64),
}

#[derive(Debug, Clone, Serialize)]
struct Quantity {
    name: String,
    def: Def,
    value: u64,
    /// Whether the answer depends on it (false for distractors).
    needed: bool,
}

/// A quantity the question does not need, defined from earlier ones (iGSM's distractors).
fn distractor(rng: &mut Rng, qs: &mut Vec<Quantity>, names: &mut Names, p: u64) {
    let a = rng.below(qs.len() as u64) as usize;
    let def = if rng.chance(0.3) {
        Def::AddConst(a, rng.range(1, p - 1))
    } else {
        let b = rng.below(qs.len() as u64) as usize;
        binary(rng, a, b)
    };
    let value = eval(qs, def, p);
    qs.push(Quantity { name: names.next(rng), def, value, needed: false });
}

/// The reference solution: one step per needed quantity, in definition order, each computation a
/// checkable calc.
fn reference_steps(qs: &[Quantity], p: u64) -> Vec<Step> {
    let var = |i: usize| variable(i);
    (0..qs.len())
        .map(|i| {
            let q = &qs[i];
            let head = format!("Define {} as {}.", var(i), q.name);
            let (text, calcs) = match q.def {
                Def::Given => (format!("{head} {} = {}.", var(i), q.value), vec![]),
                def => {
                    let (sym, expr) = formula(qs, def, &var);
                    let calc = format!("({expr}) % {p}");
                    (
                        format!("{head} {} = {sym} = {calc} = {}.", var(i), q.value),
                        vec![Calc { expr: calc, result: q.value.to_string() }],
                    )
                }
            };
            Step { text, calcs }
        })
        .collect()
}

pub fn problem(rng: &mut Rng, ops: u64, cfg: &SynthConfig) -> Problem {
    let p = cfg.modulus.max(2);
    let ops = ops.max(1) as usize;
    let mut names = Names { used: [false; PLACES.len() * THINGS.len()], letters: cfg.names == super::Names::Letters };
    let mut qs: Vec<Quantity> = Vec::new();
    let given = |qs: &mut Vec<Quantity>, rng: &mut Rng, name: String| {
        qs.push(Quantity { name, def: Def::Given, value: rng.below(p), needed: true });
        qs.len() - 1
    };

    // Leaves first; every operation then consumes at least one not-yet-used quantity, and enough of them
    // merge two unused ones that exactly one (the answer) is left unused at the end.
    let leaves = 1 + rng.below(ops.div_ceil(2) as u64 + 1) as usize;
    let mut unused: Vec<usize> = (0..leaves)
        .map(|_| {
            let name = names.next(rng);
            given(&mut qs, rng, name)
        })
        .collect();
    for step in 0..ops {
        let remaining = ops - step;
        let must_merge = unused.len() > remaining;
        let take = |rng: &mut Rng, unused: &mut Vec<usize>| unused.swap_remove(rng.below(unused.len() as u64) as usize);
        let def = if unused.len() >= 2 && (must_merge || rng.chance(0.5)) {
            let a = take(rng, &mut unused);
            let b = take(rng, &mut unused);
            binary(rng, a, b)
        } else {
            let a = take(rng, &mut unused);
            if rng.chance(0.5) && qs.len() > 1 {
                let mut b = rng.below(qs.len() as u64) as usize;
                if b == a {
                    b = (b + 1) % qs.len();
                }
                binary(rng, a, b)
            } else if rng.chance(0.5) {
                Def::AddConst(a, rng.range(1, p - 1))
            } else {
                Def::MulConst(a, rng.range(2, p - 1))
            }
        };
        let value = eval(&qs, def, p);
        qs.push(Quantity { name: names.next(rng), def, value, needed: true });
        unused.push(qs.len() - 1);
    }
    debug_assert_eq!(unused.len(), 1);
    let target = qs.len() - 1;
    let needed = qs.len();
    for _ in 0..cfg.distractors {
        distractor(rng, &mut qs, &mut names, p);
    }

    let mut statements: Vec<String> = qs.iter().map(|q| statement(&qs, q)).collect();
    rng.shuffle(&mut statements);
    let question = format!(
        "All numbers are integers modulo {p}: every sum, difference and product is taken modulo {p}. \
         What is {}?",
        qs[target].name
    );
    let prompt = format!("{} {question}", statements.join(" "));

    let steps = reference_steps(&qs[..needed], p);
    Problem {
        id: String::new(),
        source: String::new(),
        domain: Domain::Math.name().into(),
        prompt,
        gold: Some(qs[target].value.to_string()),
        tests: None,
        steps: Some(steps),
        metadata: serde_json::json!({ "modulus": p, "ops": ops, "target": target, "quantities": qs }).to_string(),
    }
}

/// Distinct quantity names, drawn by rejection: a problem uses a few dozen of the 576 place-thing pairs,
/// or of the letters (`A`..`Z`, then `A1`..`Z9` once 26 are taken).
struct Names {
    used: [bool; PLACES.len() * THINGS.len()],
    letters: bool,
}

impl Names {
    fn next(&mut self, rng: &mut Rng) -> String {
        let taken = self.used.iter().filter(|&&u| u).count();
        let pool = if !self.letters {
            self.used.len()
        } else if taken < 26 {
            26
        } else {
            260
        };
        assert!(taken < pool, "more quantities than names");
        loop {
            let k = rng.below(pool as u64) as usize;
            if !std::mem::replace(&mut self.used[k], true) {
                return match (self.letters, k / 26) {
                    (false, _) => format!("the number of {} in {}", THINGS[k % THINGS.len()], PLACES[k / THINGS.len()]),
                    (true, 0) => char::from(b'A' + k as u8).to_string(),
                    (true, digit) => format!("{}{digit}", char::from(b'A' + (k % 26) as u8)),
                };
            }
        }
    }
}

fn binary(rng: &mut Rng, a: usize, b: usize) -> Def {
    match rng.below(3) {
        0 => Def::Add(a, b),
        1 => Def::Sub(a, b),
        _ => Def::Mul(a, b),
    }
}

fn eval(qs: &[Quantity], def: Def, p: u64) -> u64 {
    let v = |i: usize| qs[i].value;
    match def {
        Def::Given => unreachable!("given quantities are not computed"),
        Def::Add(a, b) => (v(a) + v(b)) % p,
        Def::Sub(a, b) => (v(a) + p - v(b)) % p,
        Def::Mul(a, b) => (v(a) * v(b)) % p,
        Def::AddConst(a, c) => (v(a) + c) % p,
        Def::MulConst(a, c) => (v(a) * c) % p,
    }
}

/// The definition with variable names (`a * b`) and with their values (`5 * 7`).
fn formula(qs: &[Quantity], def: Def, var: &impl Fn(usize) -> String) -> (String, String) {
    let v = |i: usize| qs[i].value;
    match def {
        Def::Given => unreachable!("given quantities have no formula"),
        Def::Add(a, b) => (format!("{} + {}", var(a), var(b)), format!("{} + {}", v(a), v(b))),
        Def::Sub(a, b) => (format!("{} - {}", var(a), var(b)), format!("{} - {}", v(a), v(b))),
        Def::Mul(a, b) => (format!("{} * {}", var(a), var(b)), format!("{} * {}", v(a), v(b))),
        Def::AddConst(a, c) => (format!("{} + {c}", var(a)), format!("{} + {c}", v(a))),
        Def::MulConst(a, c) => (format!("{c} * {}", var(a)), format!("{c} * {}", v(a))),
    }
}

fn statement(qs: &[Quantity], q: &Quantity) -> String {
    let mut name = q.name.clone();
    name[..1].make_ascii_uppercase();
    let n = |i: usize| qs[i].name.as_str();
    match q.def {
        Def::Given => format!("{name} is {}.", q.value),
        Def::Add(a, b) => format!("{name} equals the sum of {} and {}.", n(a), n(b)),
        Def::Sub(a, b) => format!("{name} equals {} minus {}.", n(a), n(b)),
        Def::Mul(a, b) => format!("{name} equals the product of {} and {}.", n(a), n(b)),
        Def::AddConst(a, c) => format!("{name} is {c} more than {}.", n(a)),
        Def::MulConst(a, c) => format!("{name} is {c} times {}.", n(a)),
    }
}

/// `a`..`z`, then `a1`..`z1`, ...
fn variable(i: usize) -> String {
    let letter = (b'a' + (i % 26) as u8) as char;
    if i < 26 { letter.to_string() } else { format!("{letter}{}", i / 26) }
}
