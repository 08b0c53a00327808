//! The pass-rate window open-r1 uses to keep problems of useful difficulty (`forge filter --pass-rate`),
//! and when a few samples already decide on which side of it a problem lies (`forge generate
//! --pass-rate`, adaptive sampling). The majority vote that gives a pseudo-gold answer is
//! [`crate::verify::vote`].

use std::fmt;
use std::str::FromStr;

/// Keep problems whose sample pass rate lies in `[lo, hi]` (`--pass-rate 0.1:0.9`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassRate {
    /// Lowest pass rate kept.
    pub lo: f64,
    /// Highest pass rate kept.
    pub hi: f64,
}

impl PassRate {
    /// Whether `passed` of `total` is a pass rate inside the window.
    pub fn contains(self, passed: usize, total: usize) -> bool {
        total > 0 && {
            let rate = passed as f64 / total as f64;
            self.lo <= rate && rate <= self.hi
        }
    }

    /// Whether `passed` of `total` samples put the problem's pass rate outside the window at two-sided
    /// `confidence` (its Wilson score interval lies wholly above `hi`: too easy, or wholly below `lo`:
    /// too hard); `None` while the interval still reaches into the window.
    pub fn decided(self, passed: u64, total: u64, confidence: f64) -> Option<Side> {
        let (lo, hi) = wilson(passed, total, normal_quantile(0.5 + confidence / 2.0))?;
        if lo > self.hi {
            Some(Side::TooEasy)
        } else if hi < self.lo {
            Some(Side::TooHard)
        } else {
            None
        }
    }
}

/// Which side of the window a decided problem lies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Passes more often than `hi`.
    TooEasy,
    /// Passes less often than `lo`.
    TooHard,
}

/// The Wilson score interval of a proportion `k / n` at normal quantile `z`.
pub fn wilson(k: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The standard normal quantile (Acklam's rational approximation, relative error below 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
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

    #[test]
    fn quantiles_and_decisions() {
        for (p, z) in
            [(0.975, 1.959963985), (0.95, 1.644853627), (0.5, 0.0), (0.01, -2.326347874), (0.999, 3.090232306)]
        {
            assert!((normal_quantile(p) - z).abs() < 1e-6, "{p}: {}", normal_quantile(p));
        }
        // Wilson 95% for 8/10: (0.4902, 0.9433)
        let (lo, hi) = wilson(8, 10, 1.959963985).unwrap();
        assert!((lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4, "{lo} {hi}");
        let w: PassRate = "0.1:0.9".parse().unwrap();
        assert_eq!(w.decided(0, 4, 0.9), None, "4 wrong of 4 cannot rule out a 10% pass rate");
        assert_eq!(w.decided(0, 30, 0.9), Some(Side::TooHard));
        assert_eq!(w.decided(30, 30, 0.9), Some(Side::TooEasy));
        assert_eq!(w.decided(15, 30, 0.9), None);
    }
}
