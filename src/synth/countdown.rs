//! `countdown`: numbers and a target ("Using the numbers [44, 19, 35], create an equation that equals
//! 98."), as in TinyZero's Countdown-Tasks-3to4: numbers 1–99, targets 10–100, every number used exactly
//! once. The exhaustive solver ([`crate::formats::countdown`]) proves each instance solvable and gives the
//! reference solution.

use super::{Rng, SynthConfig};
use crate::dataset::Problem;
use crate::expr::Expr;
use crate::formats::countdown::{from_solution, solutions};

/// The range the given numbers are drawn from.
pub const NUMBERS: (u64, u64) = (1, 99);
/// The range of targets.
pub const TARGETS: (i128, i128) = (10, 100);

/// A Countdown problem with `ops + 1` numbers whose target some expression over them reaches.
pub fn problem(rng: &mut Rng, ops: u64, _cfg: &SynthConfig) -> Problem {
    loop {
        let nums: Vec<i128> = (0..=ops).map(|_| rng.range(NUMBERS.0, NUMBERS.1) as i128).collect();
        let reachable: Vec<(i128, Expr)> =
            solutions(&nums).into_iter().filter(|(v, _)| (TARGETS.0..=TARGETS.1).contains(v)).collect();
        if reachable.is_empty() {
            continue;
        }
        let (target, expr) = reachable[rng.below(reachable.len() as u64) as usize].clone();
        return from_solution(&nums, target, &expr);
    }
}
