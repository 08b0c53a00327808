//! Task checkers that need no answer equivalence: Countdown expressions, and the calculations of
//! step-by-step solutions (`arith`, `igsm`, GSM8K `<<a*b=c>>` annotations).

use serde::Serialize;

use crate::dataset::Calc;
use crate::expr;

/// Why a Countdown answer fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountdownError {
    /// Not an arithmetic expression over integers with `+ - * /` and parentheses.
    Unparsable,
    /// The numbers used are not exactly the given ones, each once.
    WrongNumbers,
    /// Evaluates to something else (or divides by zero).
    WrongValue,
}

/// What it checks: `answer` (an expression, optionally followed by `= target`) uses each of `nums`
/// exactly once and evaluates exactly (rationals, so `7 / 2 * 2` is fine) to `target`.
/// Example: nums `[44, 19, 35]`, target 98, `35 + (44 + 19)` → Ok; `44 + 19 + 35 + 0` → WrongNumbers.
pub fn countdown(answer: &str, nums: &[i128], target: i128) -> Result<(), CountdownError> {
    let expression = answer.split('=').next().unwrap_or(answer).replace(['×', 'x'], "*").replace('÷', "/");
    let e = expr::parse(&expression).map_err(|_| CountdownError::Unparsable)?;
    if has_remainder(&e) {
        return Err(CountdownError::Unparsable);
    }
    let (mut used, mut given) = (e.numbers(), nums.to_vec());
    used.sort_unstable();
    given.sort_unstable();
    if used != given {
        return Err(CountdownError::WrongNumbers);
    }
    match e.eval() {
        Ok(v) if v == expr::Rational::int(target) => Ok(()),
        _ => Err(CountdownError::WrongValue),
    }
}

fn has_remainder(e: &expr::Expr) -> bool {
    match e {
        expr::Expr::Num(_) => false,
        expr::Expr::Bin(a, op, b) => *op == expr::Op::Rem || has_remainder(a) || has_remainder(b),
    }
}

/// What it checks: `calc.expr` evaluates to `calc.result`. Integer expressions with `%` (synthetic tasks)
/// are evaluated exactly; others (GSM8K's `0.5*20`, `$3.50*4`) with the answer evaluator, exactly too.
pub fn calc(calc: &Calc) -> bool {
    let Some(result) = super::answer::exact_value(&calc.result) else { return false };
    match expr::parse(&calc.expr) {
        Ok(e) => e.eval().is_ok_and(|v| v == result),
        Err(_) => super::answer::exact_value(&calc.expr.replace('$', "")).is_some_and(|v| v == result),
    }
}

/// The 0-based indices of the calculations in `text`'s `<<expr=result>>` annotations that are wrong.
pub fn annotations(text: &str) -> Vec<usize> {
    text.lines()
        .flat_map(|line| crate::formats::steps::annotated_step(line).calcs)
        .enumerate()
        .filter(|(_, c)| !calc(c))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdown_checks_numbers_and_value() {
        let nums = [44, 19, 35];
        assert_eq!(countdown("35 + (44 + 19)", &nums, 98), Ok(()));
        assert_eq!(countdown("35 + (44 + 19) = 98", &nums, 98), Ok(()));
        assert_eq!(countdown("35 + 44 + 19 + 0", &nums, 98), Err(CountdownError::WrongNumbers));
        assert_eq!(countdown("35 + 44 + 18", &nums, 97), Err(CountdownError::WrongNumbers));
        assert_eq!(countdown("35 + 44 - 19", &nums, 98), Err(CountdownError::WrongValue));
        assert_eq!(countdown("35 + 44 + 19", &[44, 19, 35, 35], 98), Err(CountdownError::WrongNumbers));
        assert_eq!(countdown("seventy", &nums, 98), Err(CountdownError::Unparsable));
        assert_eq!(countdown("35 % 44 + 19", &nums, 54), Err(CountdownError::Unparsable));
        assert_eq!(countdown("(96 + 37) / 7 * 1", &[96, 37, 7, 1], 19), Ok(()));
    }

    #[test]
    fn calcs_are_redone_exactly() {
        let c = |e: &str, r: &str| calc(&Calc { expr: e.into(), result: r.into() });
        assert!(c("48/2", "24"));
        assert!(c("(5 * 7) % 23", "12"));
        assert!(!c("(5 * 7) % 23", "13"));
        assert!(c("0.5*20", "10"));
        assert!(c("3.5*4", "14"));
        assert!(!c("16-3-4", "8"));
        assert_eq!(annotations("a <<2*3=6>>6\nb <<6+1=8>>8 and <<8-1=7>>7"), vec![1]);
    }
}
