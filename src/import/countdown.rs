//! Countdown (TinyZero's Countdown-Tasks): `{"nums", "target", "ref_solution"?, "id"?}`. The reference
//! solution is checked (each number once, reaches the target); without one, the solver finds one.

use super::{Row, content_id};
use crate::dataset::Problem;
use crate::error::Result;
use crate::expr;
use crate::formats::countdown::{from_solution, solve};

pub fn convert(row: &Row) -> Result<Problem> {
    let nums = row.int_list("nums")?;
    let target = row.int("target")?;
    let solution = match row.opt_text("ref_solution")? {
        Some(text) => {
            let e = expr::parse(&text).map_err(|e| row.error("ref_solution", format!("cannot parse `{text}`: {e}")))?;
            let (mut used, mut given) = (e.numbers(), nums.clone());
            used.sort_unstable();
            given.sort_unstable();
            if used != given || e.eval().ok().and_then(expr::Rational::as_int) != Some(target) {
                return Err(
                    row.error("ref_solution", format!("`{text}` does not reach {target} using each of {nums:?} once"))
                );
            }
            e
        }
        None => solve(&nums, target)
            .ok_or_else(|| row.error("target", format!("{target} cannot be reached from {nums:?}")))?,
    };
    let mut p = from_solution(&nums, target, &solution);
    p.id = match row.opt_scalar("id")? {
        Some(id) => id,
        None => content_id(&p.prompt, p.gold.as_deref()),
    };
    let mut metadata: serde_json::Value = serde_json::from_str(&p.metadata).expect("valid JSON");
    let rest: serde_json::Value =
        serde_json::from_str(&row.metadata(&["nums", "target", "ref_solution", "id"])).expect("valid JSON");
    metadata.as_object_mut().expect("object").extend(rest.as_object().expect("object").clone());
    p.metadata = metadata.to_string();
    Ok(p)
}
