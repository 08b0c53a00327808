//! Selection across the samples of one problem: self-consistency (a majority vote gives a pseudo-gold
//! answer when a problem has none) and the pass-rate window open-r1 uses to keep problems of useful
//! difficulty.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::verify::equivalent;

/// The winning answer of a vote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vote {
    /// The first-seen spelling of the winning answer.
    pub answer: String,
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

/// Keep problems whose sample pass rate lies in `[lo, hi]` (`--pass-rate 0.1:0.9`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassRate {
    pub lo: f64,
    pub hi: f64,
}

impl PassRate {
    pub fn contains(self, passed: usize, total: usize) -> bool {
        total > 0 && {
            let rate = passed as f64 / total as f64;
            self.lo <= rate && rate <= self.hi
        }
    }
}

impl fmt::Display for PassRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.lo, self.hi)
    }
}

impl FromStr for PassRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a pass-rate window: expected LO:HI with 0 <= LO <= HI <= 1, e.g. `0.1:0.9`");
        let (lo, hi) = s.split_once(':').ok_or_else(bad)?;
        let (lo, hi): (f64, f64) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
        if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
            return Err(bad());
        }
        Ok(PassRate { lo, hi })
    }
}

crate::serde_as_string!(PassRate);

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

    #[test]
    fn pass_rate_window() {
        let w: PassRate = "0.1:0.9".parse().unwrap();
        assert!(w.contains(1, 4));
        assert!(!w.contains(4, 4));
        assert!(!w.contains(0, 4));
        assert!(!w.contains(0, 0));
        assert!("0.9:0.1".parse::<PassRate>().is_err());
        assert!("1.5".parse::<PassRate>().is_err());
    }
}
