//! The Countdown problem (numbers and a target, every number used exactly once): its row form with a
//! reference solution, and the exhaustive solver that proves an instance solvable (used by `synth`'s
//! generator and by `import --preset countdown` for rows without a reference).

use std::collections::BTreeMap;

use super::domain::Domain;
use crate::dataset::{Calc, Problem, Step};
use crate::expr::{Expr, Op};

/// The countdown problem row for `nums` and `target` with `solution` as its reference.
pub fn from_solution(nums: &[i128], target: i128, solution: &Expr) -> Problem {
    let list: Vec<String> = nums.iter().map(i128::to_string).collect();
    Problem {
        id: String::new(),
        source: String::new(),
        domain: Domain::Countdown.name().into(),
        prompt: format!(
            "Using the numbers [{}], create an equation that equals {target}. You can use basic arithmetic \
             operations (+, -, *, /) and each number can only be used once.",
            list.join(", ")
        ),
        gold: Some(target.to_string()),
        tests: None,
        steps: Some(steps(solution)),
        metadata: serde_json::json!({ "nums": nums, "target": target, "solution": solution.to_string() }).to_string(),
    }
}

/// One step per operation, then the whole expression as the final step.
pub fn steps(solution: &Expr) -> Vec<Step> {
    let mut steps: Vec<Step> = solution
        .steps()
        .unwrap_or_default()
        .into_iter()
        .map(|s| Step {
            text: format!("{} = {}", s.expr, s.value),
            calcs: vec![Calc { expr: s.expr, result: s.value.to_string() }],
        })
        .collect();
    if let Ok(value) = solution.eval() {
        steps.push(Step {
            text: format!("{solution} = {value}"),
            calcs: vec![Calc { expr: solution.to_string(), result: value.to_string() }],
        });
    }
    steps
}

/// Every value reachable from `nums` using each number once, with non-negative integer intermediate
/// results (exact division only), and the first expression found for it. Exhaustive: fine up to 5
/// numbers (about 10^5 combinations), which is why `--ops` is capped at 4 for this task.
pub fn solutions(nums: &[i128]) -> BTreeMap<i128, Expr> {
    let mut found = BTreeMap::new();
    let items: Vec<(i128, Expr)> = nums.iter().map(|&n| (n, Expr::Num(n))).collect();
    search(items, &mut found);
    found
}

/// A solution reaching `target`, if there is one.
pub fn solve(nums: &[i128], target: i128) -> Option<Expr> {
    solutions(nums).remove(&target)
}

fn search(items: Vec<(i128, Expr)>, found: &mut BTreeMap<i128, Expr>) {
    if items.len() == 1 {
        let (v, e) = items.into_iter().next().expect("one item");
        found.entry(v).or_insert(e);
        return;
    }
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            let rest: Vec<(i128, Expr)> =
                items.iter().enumerate().filter(|(k, _)| *k != i && *k != j).map(|(_, it)| it.clone()).collect();
            let (a, ea) = &items[i];
            let (b, eb) = &items[j];
            let (big, ebig, small, esmall) = if a >= b { (*a, ea, *b, eb) } else { (*b, eb, *a, ea) };
            let mut combos = vec![
                (big + small, Expr::bin(ebig.clone(), Op::Add, esmall.clone())),
                (big - small, Expr::bin(ebig.clone(), Op::Sub, esmall.clone())),
                (big * small, Expr::bin(ebig.clone(), Op::Mul, esmall.clone())),
            ];
            if small != 0 && big % small == 0 {
                combos.push((big / small, Expr::bin(ebig.clone(), Op::Div, esmall.clone())));
            }
            for (v, e) in combos {
                let mut next = rest.clone();
                next.push((v, e));
                search(next, found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solver_solutions_use_each_number_once_and_hit_the_target() {
        let nums = [44, 19, 35];
        let solution = solve(&nums, 98).expect("solvable");
        assert_eq!(solution.eval().unwrap().as_int(), Some(98));
        let mut used = solution.numbers();
        used.sort();
        assert_eq!(used, vec![19, 35, 44]);
        assert!(solve(&[1, 1, 1], 100).is_none());
    }
}
