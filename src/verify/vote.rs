//! Self-consistency: a majority vote over extracted answers, equivalent spellings counted as one (used by
//! `filter` for problems without gold and by `eval` for maj@n).

use serde::Serialize;

use super::equivalent;

/// The winning answer of a vote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vote {
    /// The first-seen spelling of the winning answer.
    pub answer: String,
    /// Samples that gave it.
    pub votes: usize,
    /// Answers that took part (samples without an extracted answer do not vote).
    pub total: usize,
}

/// Majority vote over extracted answers, grouping equivalent spellings (`\frac12`, `0.5`, `1/2`). A tie
/// goes to the answer seen first, so the result does not depend on hash order.
pub fn majority<'a>(answers: impl IntoIterator<Item = &'a str>, tolerance: f64) -> Option<Vote> {
    let mut groups: Vec<(&str, usize)> = Vec::new();
    let mut total = 0;
    for answer in answers {
        total += 1;
        match groups.iter_mut().find(|(a, _)| equivalent(a, answer, tolerance).is_some()) {
            Some(group) => group.1 += 1,
            None => groups.push((answer, 1)),
        }
    }
    let best = groups.iter().enumerate().max_by_key(|(i, (_, n))| (*n, std::cmp::Reverse(*i)))?.1;
    Some(Vote { answer: best.0.to_string(), votes: best.1, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::DEFAULT_TOLERANCE;

    #[test]
    fn votes_group_equivalent_spellings() {
        let vote = majority(["3", "\\frac12", "0.5", "3", "1/2"], DEFAULT_TOLERANCE).unwrap();
        assert_eq!(vote, Vote { answer: "\\frac12".into(), votes: 3, total: 5 });
        let tie = majority(["7", "8"], DEFAULT_TOLERANCE).unwrap();
        assert_eq!(tie.answer, "7");
        assert_eq!(majority([], DEFAULT_TOLERANCE), None);
    }
}
