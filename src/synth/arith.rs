//! `arith`: "Compute (17 + 25) * 3 - 8." A random expression tree with a given number of operations,
//! every intermediate value a non-negative integer (division only when exact), solved one operation
//! per step.

use super::{Rng, SynthConfig};
use crate::dataset::{Calc, Problem, Step};
use crate::expr::{Expr, Op};
use crate::formats::domain::Domain;

/// Intermediate values stay at or below this, so a tiny model is not asked for huge products.
const MAX_VALUE: i128 = 10_000;

pub fn problem(rng: &mut Rng, ops: u64, cfg: &SynthConfig) -> Problem {
    let (expr, value) = tree(rng, ops, cfg.max_operand.max(1));
    let steps = expr
        .steps()
        .expect("generated expressions evaluate")
        .into_iter()
        .map(|s| Step {
            text: format!("{} = {}", s.expr, s.value),
            calcs: vec![Calc { expr: s.expr, result: s.value.to_string() }],
        })
        .collect();
    Problem {
        id: String::new(),
        source: String::new(),
        domain: Domain::Math.name().into(),
        prompt: format!("Compute {expr}."),
        gold: Some(value.to_string()),
        tests: None,
        steps: Some(steps),
        metadata: serde_json::json!({ "expression": expr.to_string(), "ops": ops }).to_string(),
    }
}

fn tree(rng: &mut Rng, ops: u64, max_operand: u64) -> (Expr, i128) {
    if ops == 0 {
        let n = rng.range(1, max_operand) as i128;
        return (Expr::Num(n), n);
    }
    let left_ops = rng.below(ops);
    let (a, x) = tree(rng, left_ops, max_operand);
    let (b, y) = tree(rng, ops - 1 - left_ops, max_operand);
    let mut allowed = Vec::with_capacity(4);
    if x + y <= MAX_VALUE {
        allowed.push(Op::Add);
    }
    if x >= y {
        allowed.push(Op::Sub);
    }
    if x * y <= MAX_VALUE {
        allowed.push(Op::Mul);
    }
    if y > 1 && x % y == 0 {
        allowed.push(Op::Div);
    }
    // x < y with x + y too large cannot happen with small operands; fall back to a subtraction the
    // other way round rather than break the value bound.
    let (a, op, b, x, y) = if allowed.is_empty() { (b, Op::Sub, a, y, x) } else { (a, *rng.pick(&allowed), b, x, y) };
    let value = match op {
        Op::Add => x + y,
        Op::Sub => x - y,
        Op::Mul => x * y,
        Op::Div => x / y,
        Op::Rem => unreachable!("arith does not generate remainders"),
    };
    (Expr::bin(a, op, b), value)
}
