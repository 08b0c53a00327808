//! Selection across the samples of one problem: the pass-rate window open-r1 uses to keep problems of
//! useful difficulty (the majority vote that gives a pseudo-gold answer is [`crate::verify::vote`]).

use std::fmt;
use std::str::FromStr;

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
