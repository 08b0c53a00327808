//! Are two final answers the same? Both sides are normalised (LaTeX spacing and sizing commands, `\text{}`
//! and unit words, `$`, degrees), then parsed into numbers, tuples, intervals, sets, labelled values,
//! equations, ratios, matrices or text and compared by structure.
//!
//! Numbers are exact rationals wherever the notation is exact (integers with thousands separators,
//! decimals, scientific notation, `\frac`, `a/b`, mixed numbers, percentages, powers): exact values compare
//! exactly, so `0.1` and `0.10000001` differ and `1/2004!`-style near-zero values never collapse together.
//! A value with `\sqrt` or `\pi` is compared with a relative tolerance ([`DEFAULT_TOLERANCE`]); a decimal
//! against a non-terminating exact value matches when it is that value correctly rounded to at least
//! [`MIN_DECIMAL_PLACES`] places (`0.333` for `1/3`). Percent is a notation on a whole value: `28\%` equals
//! `0.28` and `28`, `12.5\%` equals `12.5`, but `4 4/9\%` is only 4 4/9 hundredths.
//!
//! Structure: a one-variable inequality, chain or `≠` is the set it describes (`x \ge 5` = `[5, \infty)`,
//! `1 \le |z| \le 2` = `[-2,-1] \cup [1,2]`); `x = 3`, `(p,q) = (3,2)`, `\frac{NO}{BO} = …` are labelled
//! values, equal to their value, and lists of them match label by label when both sides are labelled; a
//! calculation `5 \times 2 = 10` is its result; any other equation equals one with the same solutions up to a
//! constant factor (`2x + 4y = 3`, `y = -x/2 + 3/4`); `7:32` equals a ratio of the same proportion; a list
//! ending in `\ldots` is not a finite list. Expressions with variables compare by exact evaluation at the same
//! points. Work is bounded: inputs are capped at [`MAX_LEN`] characters, nesting and exponents are limited,
//! so hostile input gets a verdict, not a hang.

use serde::Serialize;

use super::latex::{self, V};
use crate::expr::{Op, Rational};

/// Relative tolerance for values that are not exact (`\sqrt`, `\pi`).
pub const DEFAULT_TOLERANCE: f64 = 1e-6;
/// A decimal matches a non-terminating exact value when it is that value rounded to this many places or more.
pub const MIN_DECIMAL_PLACES: u32 = 3;
/// Longer answers are compared as text only.
pub const MAX_LEN: usize = 10_000;
const MAX_DEPTH: usize = 64;

/// How a verdict was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The same text once normalised, or the same exact number.
    Exact,
    /// Values that are not exact (`\sqrt`, `\pi`) within the relative tolerance.
    Tolerance,
    /// A decimal that is a non-terminating exact value correctly rounded (to at least
    /// [`MIN_DECIMAL_PLACES`] places).
    Rounding,
    /// Tuples, intervals, sets and matrices whose elements are equivalent.
    Structure,
    /// Equal at every one of several exact random points (expressions with variables).
    Symbolic,
    /// Equal as plain text (what is not math).
    Text,
    /// Code: the program passed every test.
    Tests,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(Num),
    /// `(a, b)`, `[a, b)`, ...: ordered; the brackets must agree (a tuple is not a closed interval).
    Seq(char, Vec<Value>, char),
    /// `\{a, b\}` or a bare list `a, b`: unordered.
    Set(Vec<Value>),
    /// `(0, 1) \\cup (2, 3)`: unordered, like a set, but only equal to another union.
    Union(Vec<Value>),
    /// `\\begin{pmatrix} … \\end{pmatrix}` (any matrix environment): rows of cells.
    Matrix(Vec<Vec<Value>>),
    /// An expression with variables, compared by evaluation at the same points.
    Sym(latex::Expr),
    /// `x = 3`, `a_{37} = 19`: a value under a name (the name without spaces and braces; the name as an
    /// expression, when it is one, to compare `y = 2x + 1` with an equation).
    Labelled(String, Box<Value>, Option<latex::Expr>),
    /// `7:32`: the proportion, equal only to another ratio.
    Ratio(Num),
    /// `lhs = rhs` that is not a labelled value, as `lhs - rhs`: equal to an equation with the same solutions.
    Equation(latex::Expr),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Num {
    exact: Option<Rational>,
    approx: f64,
    percent: bool,
    /// Decimal places when written as a decimal literal.
    places: Option<u32>,
}

/// `Some(method)` when `pred` is equivalent to `gold`.
pub fn equivalent(gold: &str, pred: &str, tolerance: f64) -> Option<Method> {
    // Most answers are plain numbers (`18`, `-3.5`): compared exactly, without the general parser.
    if let (Some(a), Some(b)) = (plain_number(gold), plain_number(pred)) {
        return (a == b).then_some(Method::Exact);
    }
    let (g, p) = (normalize(gold), normalize(pred));
    if g.is_empty() || p.is_empty() {
        return None;
    }
    if g == p {
        return Some(Method::Exact);
    }
    same(&parse(&g), &parse(&p), tolerance)
}

/// `18`, `-3.5`, `.5`: digits with at most one point and a leading minus, nothing else.
fn plain_number(s: &str) -> Option<Rational> {
    let s = s.trim();
    let (negative, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
    if !digits.bytes().all(|b| b.is_ascii_digit() || b == b'.') || !digits.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = latex::decimal(digits)?;
    if negative { Op::Sub.apply(Rational::int(0), value).ok() } else { Some(value) }
}

/// The exact value of a numeric answer (`24`, `1,000`, `\frac{1}{2}`, `3.5`), if it has one.
pub fn exact_value(answer: &str) -> Option<Rational> {
    match parse(&normalize(answer)) {
        Value::Num(n) if !n.percent => n.exact,
        _ => None,
    }
}

/// Does `answer` read as a number, tuple, interval or set (not as free text)?
pub fn is_structured(answer: &str) -> bool {
    fn no_text(v: &Value) -> bool {
        match v {
            Value::Num(_) => true,
            Value::Seq(_, items, _) | Value::Set(items) | Value::Union(items) => items.iter().all(no_text),
            Value::Matrix(rows) => rows.iter().flatten().all(no_text),
            Value::Sym(_) | Value::Ratio(_) | Value::Equation(_) => true,
            Value::Labelled(_, v, _) => no_text(v),
            Value::Text(_) => false,
        }
    }
    no_text(&parse(&normalize(answer)))
}

fn same(g: &Value, p: &Value, tol: f64) -> Option<Method> {
    match (g, p) {
        (Value::Num(a), Value::Num(b)) => same_number(a, b, tol),
        (Value::Seq(o1, a, c1), Value::Seq(o2, b, c2)) if o1 == o2 && c1 == c2 && a.len() == b.len() => {
            a.iter().zip(b).all(|(x, y)| same(x, y, tol).is_some()).then_some(Method::Structure)
        }
        // `2x + 4y = 3` against `y = -x/2 + 3/4`: the labelled value read as an equation.
        (Value::Equation(e), Value::Labelled(_, v, Some(name)))
        | (Value::Labelled(_, v, Some(name)), Value::Equation(e)) => {
            let Value::Sym(v) = v.as_ref() else { return None };
            proportional(e, &latex::Expr::difference(name, v), tol)
        }
        (Value::Labelled(_, a, _), b) | (b, Value::Labelled(_, a, _)) => same(a, b, tol),
        (Value::Set(a), Value::Set(b)) => labelled_set(a, b, tol).unwrap_or_else(|| unordered(a, b, tol)),
        (Value::Union(a), Value::Union(b)) => unordered(a, b, tol),
        (Value::Ratio(a), Value::Ratio(b)) => same_value(a, b, tol),
        (Value::Equation(a), Value::Equation(b)) => proportional(a, b, tol),
        (Value::Sym(a), Value::Sym(b)) => symbolic(a, b, tol),
        // An identity such as `\\sin^2 x + \\cos^2 x` against a number.
        (Value::Sym(a), Value::Num(n)) | (Value::Num(n), Value::Sym(a)) => {
            let constant = latex::Expr::constant(n.exact, n.approx);
            symbolic(a, &constant, tol)
        }
        (Value::Matrix(a), Value::Matrix(b))
            if a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.len() == y.len()) =>
        {
            a.iter()
                .flatten()
                .zip(b.iter().flatten())
                .all(|(x, y)| same(x, y, tol).is_some())
                .then_some(Method::Structure)
        }
        (Value::Text(a), Value::Text(b)) => (text_key(a) == text_key(b)).then_some(Method::Text),
        _ => None,
    }
}

fn same_number(a: &Num, b: &Num, tol: f64) -> Option<Method> {
    let candidates = |n: &Num| {
        let mut v = vec![*n];
        // 28% is also read as its numeral, 28 (and 12.5% as 12.5), but `4 4/9%` is one value, 4 4/9 hundredths.
        let numeral = n.exact.and_then(|x| Op::Mul.apply(x, Rational::int(100)).ok());
        if n.percent && (n.places.is_some() || numeral.is_some_and(|x| x.den == 1)) {
            v.push(Num { exact: numeral, approx: n.approx * 100.0, percent: false, places: n.places });
        }
        v
    };
    for x in candidates(a) {
        for y in candidates(b) {
            if let Some(m) = same_value(&x, &y, tol) {
                return Some(m);
            }
        }
    }
    None
}

fn same_value(a: &Num, b: &Num, tol: f64) -> Option<Method> {
    match (a.exact, b.exact) {
        (Some(x), Some(y)) if x == y => Some(Method::Exact),
        (Some(x), Some(y)) => {
            // A decimal written for a value it can only approximate (1/3 as 0.333).
            let rounded = |dec: &Num, val: Rational| {
                let places = dec.places?;
                (places >= MIN_DECIMAL_PLACES && !terminates(val) && {
                    let scale = 10f64.powi(places as i32);
                    let v = val.num as f64 / val.den as f64;
                    (v * scale).round() == (dec.approx * scale).round()
                        || (v * scale).trunc() == (dec.approx * scale).trunc()
                })
                .then_some(Method::Rounding)
            };
            rounded(a, y).or_else(|| rounded(b, x))
        }
        _ if a.approx.is_infinite() || b.approx.is_infinite() => (a.approx == b.approx).then_some(Method::Exact),
        _ => {
            let (x, y) = (a.approx, b.approx);
            (x.is_finite() && y.is_finite() && (x - y).abs() <= tol * x.abs().max(y.abs())).then_some(Method::Tolerance)
        }
    }
}

/// The same items in any order (each item matched once).
fn unordered(a: &[Value], b: &[Value], tol: f64) -> Option<Method> {
    if a.len() != b.len() {
        return None;
    }
    let mut used = vec![false; b.len()];
    for x in a {
        let hit = (0..b.len()).find(|&j| !used[j] && same(x, &b[j], tol).is_some())?;
        used[hit] = true;
    }
    Some(Method::Structure)
}

/// Two lists whose items are all labelled with the same labels (`a_3 = 2, a_{37} = 19`) match label by label;
/// `None` when they are not both labelled that way.
fn labelled_set(a: &[Value], b: &[Value], tol: f64) -> Option<Option<Method>> {
    fn labels(v: &[Value]) -> Option<Vec<&String>> {
        let mut l: Vec<&String> = v
            .iter()
            .map(|x| if let Value::Labelled(name, _, _) = x { Some(name) } else { None })
            .collect::<Option<_>>()?;
        l.sort();
        Some(l)
    }
    let (la, lb) = (labels(a)?, labels(b)?);
    if la != lb {
        return None;
    }
    let value = |v: &[Value], name: &str| {
        v.iter().find_map(|x| match x {
            Value::Labelled(n, value, _) if n == name => Some(value.as_ref().clone()),
            _ => None,
        })
    };
    Some(
        la.iter()
            .all(|name| matches!((value(a, name), value(b, name)), (Some(x), Some(y)) if same(&x, &y, tol).is_some()))
            .then_some(Method::Structure),
    )
}

/// Two equations `f = 0` and `g = 0` with `f = c·g` for one constant `c ≠ 0` at every point (`2x + 4y = 3`
/// and `y = -x/2 + 3/4` compare as `2x + 4y - 3` and `y + x/2 - 3/4`).
fn proportional(a: &latex::Expr, b: &latex::Expr, tol: f64) -> Option<Method> {
    let vars: Vec<&String> = a.vars.union(&b.vars).collect();
    let mut ratio: Option<f64> = None;
    let mut agreed = 0;
    for k in 0..SAMPLES {
        let env = |name: &str| point(&vars, name, k);
        let (Some(x), Some(y)) = (a.eval(&env), b.eval(&env)) else { continue };
        if x.approx.abs() < 1e-12 || y.approx.abs() < 1e-12 {
            if (x.approx.abs() < 1e-12) != (y.approx.abs() < 1e-12) {
                return None;
            }
            continue;
        }
        let r = x.approx / y.approx;
        match ratio {
            Some(c) if (c - r).abs() > tol.max(1e-9) * c.abs().max(r.abs()) => return None,
            _ => ratio = Some(r),
        }
        agreed += 1;
    }
    (agreed >= 3).then_some(Method::Symbolic)
}

/// Points at which symbolic answers are compared: exact rationals unlikely to be special.
const POINTS: [(i128, i128); 11] =
    [(2, 7), (5, 3), (-3, 11), (7, 5), (11, 13), (13, 4), (-9, 7), (3, 17), (19, 6), (-5, 2), (23, 9)];

/// Points tried per comparison: the first half near 0, the second half shifted by 10 (inside the domain of
/// `\\sqrt{x - 3}` or `\\ln(x - 5)`, where every point of the first half is outside).
const SAMPLES: usize = 14;

/// The value of variable `name` at sample `k`: each variable gets a different exact rational.
fn point(vars: &[&String], name: &str, k: usize) -> Option<V> {
    let i = vars.iter().position(|v| v.as_str() == name)?;
    let (n, d) = POINTS[(i + 3 * k) % POINTS.len()];
    let shift = if k >= SAMPLES / 2 { 10 * d } else { 0 };
    Some(V::exact(Rational::new(n + shift, d).ok()?))
}

/// Same value at several points, each variable bound to a different exact rational at each point.
fn symbolic(a: &latex::Expr, b: &latex::Expr, tol: f64) -> Option<Method> {
    let vars: Vec<&String> = a.vars.union(&b.vars).collect();
    let mut agreed = 0;
    for k in 0..SAMPLES {
        let env = |name: &str| point(&vars, name, k);
        let (Some(x), Some(y)) = (a.eval(&env), b.eval(&env)) else { continue };
        let num = |v: V| Num { exact: v.exact, approx: v.approx, percent: false, places: None };
        same_value(&num(x), &num(y), tol)?;
        agreed += 1;
    }
    (agreed >= 3).then_some(Method::Symbolic)
}

/// Does the decimal expansion of `r` end?
fn terminates(r: Rational) -> bool {
    let mut d = r.den;
    while d % 2 == 0 {
        d /= 2;
    }
    while d % 5 == 0 {
        d /= 5;
    }
    d == 1
}

/// Case, articles, plural `s`, spaces and `\text` already gone: the key text answers compare by.
fn text_key(s: &str) -> String {
    let s = s.to_lowercase();
    let words: Vec<String> = s
        .split(|c: char| c.is_whitespace())
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(|w| {
            let w = w.trim_matches(|c: char| c == '(' || c == ')' || c == '.');
            if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
                w[..w.len() - 1].to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    words.concat()
}

/// Strip notation that never changes the value.
pub fn normalize(answer: &str) -> String {
    // `\\\\` (a matrix row break) must survive the rewrites of `\\ `, `\\,` and friends.
    let mut s: String = answer.chars().take(MAX_LEN).collect::<String>().replace("\\\\", "\u{0}");
    // Most answers are plain numbers or words: skip the rewriting passes when nothing can match.
    let plain = s.is_ascii() && !s.bytes().any(|b| matches!(b, b'\\' | b'$' | b'~' | b'{' | b'^' | b'%'));
    for (from, to) in if plain {
        &[][..]
    } else {
        &[
            ("\\left", ""),
            ("\\right", ""),
            ("\\displaystyle", ""),
            ("\\dfrac", "\\frac"),
            ("\\tfrac", "\\frac"),
            // `11,\\! 111`: a thousands separator (a list item would not get the negative space).
            (",\\! ", ","),
            ("\\!", ""),
            ("\\,", ""),
            ("\\;", ""),
            ("\\:", ""),
            ("\\ ", " "),
            ("\\quad", " "),
            ("~", " "),
            ("{,}", ""),
            ("^{\\circ}", ""),
            ("^\\circ", ""),
            ("\\circ", ""),
            ("°", ""),
            ("\\$", ""),
            ("$", ""),
            ("\\%", "%"),
            ("\\cdot", "*"),
            ("\\times", "*"),
            ("×", "*"),
            ("\\infty", "∞"),
            ("\\neq", "!="),
            ("\\ne ", "!="),
            ("≠", "!="),
            ("\\leqslant", "<="),
            ("\\geqslant", ">="),
            ("\\leq", "<="),
            ("\\geq", ">="),
            ("\\le", "<="),
            ("\\ge", ">="),
            ("\\lt", "<"),
            ("\\gt", ">"),
            ("≤", "<="),
            ("≥", ">="),
            ("\\lbrace", "\\{"),
            ("\\lvert", "|"),
            ("\\rvert", "|"),
            ("\\langle", "("),
            ("\\rangle", ")"),
            ("\\mathbb{R}", "(-∞, ∞)"),
            ("\\emptyset", "\\{\\}"),
            ("\\varnothing", "\\{\\}"),
            ("±", "\\pm"),
            ("\\rbrace", "\\}"),
        ][..]
    } {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    for wrapper in if plain {
        &[][..]
    } else {
        &[
            "\\boxed",
            "\\fbox",
            "\\text",
            "\\textbf",
            "\\mathrm",
            "\\mathbf",
            "\\mbox",
            "\\textit",
            "\\operatorname",
            "\\boldsymbol",
            "\\mathit",
            "\\textrm",
        ][..]
    } {
        s = unwrap(&s, wrapper);
    }
    let s = s.trim().trim_end_matches('.').trim().to_string();
    s.replace('\u{0}', "\\\\")
}

/// `\text{abc}` → `abc` (for each occurrence; braces matched).
fn unwrap(s: &str, command: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(command) {
        let after = &rest[i + command.len()..];
        if !after.starts_with('{') {
            out.push_str(&rest[..i + command.len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..i]);
        let mut depth = 0usize;
        let mut end = after.len();
        for (j, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push_str(&after[1..end.max(1)]);
        rest = if end < after.len() { &after[end + 1..] } else { "" };
    }
    out.push_str(rest);
    out
}

/// `15 cm`, `5 dollars`, `\frac{1}{3} meters`, `15 cm^2`: a number followed only by words is the number.
fn strip_units(s: &str) -> String {
    let t = s.trim();
    let is_unit = |w: &str| {
        let w = w.split('^').next().unwrap_or(w);
        w.len() >= 2 && w.chars().all(char::is_alphabetic)
    };
    let mut head = t;
    while let Some((rest, last)) = head.rsplit_once(char::is_whitespace) {
        if !is_unit(last) {
            break;
        }
        head = rest.trim_end();
    }
    // `15cm` with no space: cut at the first letter.
    if head == t
        && let Some(i) = t.find(|c: char| c.is_ascii_alphabetic())
        && i > 0
        && !t[..i].ends_with('\\')
        && is_unit(&t[i..])
    {
        head = t[..i].trim_end();
    }
    if head != t && latex::parse(head).is_some_and(|e| e.vars.is_empty()) { head.to_string() } else { t.to_string() }
}

fn parse(s: &str) -> Value {
    parse_depth(s, 0)
}

fn parse_depth(s: &str, depth: usize) -> Value {
    let s = s.trim();
    if depth > MAX_DEPTH {
        return Value::Text(s.to_string());
    }
    if let Some(m) = matrix(s, depth) {
        return m;
    }
    // `1, 2, 3, \ldots` is not the list `1, 2, 3`.
    if ["...", "\\ldots", "\\cdots", "\\dots", "…"].iter().any(|e| s.contains(e)) {
        return Value::Text(s.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    if s.contains("\\cup") {
        return Value::Union(s.split("\\cup").map(|part| parse_depth(part, depth + 1)).collect());
    }
    if thousands(s) {
        return parse_depth(&s.replace(',', ""), depth + 1);
    }
    // `k = 1,000,000` is one labelled number, not a list.
    if let Some((lhs, rhs)) = s.split_once('=')
        && thousands(rhs.trim())
        && is_label(lhs.trim())
    {
        return equation(&s.replace(',', ""), depth).unwrap_or_else(|| Value::Text(s.to_string()));
    }
    let items = split_top(s);
    if items.len() > 1 {
        return Value::Set(items.iter().map(|i| parse_depth(i, depth + 1)).collect());
    }
    if let Some(both) = plus_minus(s) {
        return Value::Set(both.iter().map(|i| parse_depth(i, depth + 1)).collect());
    }
    let brackets = [("\\{", "\\}"), ("{", "}"), ("(", ")"), ("[", "]"), ("(", "]"), ("[", ")")];
    for (open, close) in brackets {
        if let Some(inner) = s.strip_prefix(open).and_then(|r| r.strip_suffix(close))
            && balanced(inner)
        {
            let items = split_top(inner);
            if open == "\\{" || open == "{" && items.len() > 1 {
                return Value::Set(items.iter().map(|i| parse_depth(i, depth + 1)).collect());
            }
            if items.len() > 1 {
                let o = open.chars().next().expect("bracket");
                let c = close.chars().next().expect("bracket");
                return Value::Seq(o, items.iter().map(|i| parse_depth(i, depth + 1)).collect(), c);
            }
        }
    }
    if let Some(v) = inequality(s, depth).or_else(|| equation(s, depth)).or_else(|| ratio(s, depth)) {
        return v;
    }
    if let Some(sign) = ["∞", "+∞", "-∞"].iter().position(|i| *i == s) {
        return Value::Num(infinite(sign == 2));
    }
    leaf(&strip_units(s)).unwrap_or_else(|| Value::Text(s.split_whitespace().collect::<Vec<_>>().join(" ")))
}

/// A whole number with thousands separators (`1,234,567.5`): one number, not a list.
fn thousands(s: &str) -> bool {
    let int = s.split('.').next().unwrap_or("");
    let groups: Vec<&str> = int.trim_start_matches(['-', '$']).split(',').collect();
    groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups.iter().all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
        && groups[1..].iter().all(|g| g.len() == 3)
}

/// A number or an expression with variables.
fn leaf(s: &str) -> Option<Value> {
    let e = latex::parse(s)?;
    if !e.vars.is_empty() {
        return Some(Value::Sym(e));
    }
    let v = e.value()?;
    Some(Value::Num(Num { exact: v.exact, approx: v.approx, percent: e.percent, places: e.places }))
}

fn infinite(negative: bool) -> Num {
    Num { exact: None, approx: if negative { f64::NEG_INFINITY } else { f64::INFINITY }, percent: false, places: None }
}

/// `\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}` (also bmatrix, vmatrix, matrix, array, and an array
/// in brackets: `\\left[\\begin{array}{cc} … \\end{array}\\right]`).
fn matrix(s: &str, depth: usize) -> Option<Value> {
    let s = match s.strip_prefix(['[', '(']).and_then(|r| r.strip_suffix([']', ')'])) {
        Some(inner) if inner.trim_start().starts_with("\\begin{") => inner.trim(),
        _ => s,
    };
    let body = s.strip_prefix("\\begin{")?;
    let (env, body) = body.split_once('}')?;
    let body = body.strip_suffix(&format!("\\end{{{env}}}"))?;
    // `array` carries a column spec: `\\begin{array}{cc}`.
    let body = if env == "array" {
        body.trim_start().strip_prefix('{').and_then(|b| b.split_once('}')).map_or(body, |(_, b)| b)
    } else {
        body
    };
    let rows: Vec<Vec<Value>> = body
        .split("\\\\")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| r.split('&').map(|c| parse_depth(c, depth + 1)).collect())
        .collect();
    (!rows.is_empty()).then_some(Value::Matrix(rows))
}

/// The byte offsets of `op` in `s` outside brackets and braces.
fn top_level(s: &str, op: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut depth = 0i64;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ if depth == 0 && s[i..].starts_with(op) => found.push(i),
            _ => {}
        }
    }
    found
}

/// `x = 3`, `a_{37} = 19`, `(p, q) = (3, 2)`, `\\frac{NO}{BO} = \\frac{1}{\\sqrt6}`: a labelled value
/// (the label names what the value is); `5 \\times 2 = 10`: a calculation, worth its result; `v \\in S`: the set
/// `S`; anything else with `=` (`2x + y = 1`, `7 = 11a + c`) is an equation.
fn equation(s: &str, depth: usize) -> Option<Value> {
    if let Some((v, set)) = s.split_once("\\in ").or_else(|| s.split_once("\\in["))
        && is_var(v.trim())
    {
        let set = if s.contains("\\in[") { format!("[{set}") } else { set.to_string() };
        return Some(parse_depth(&set, depth + 1));
    }
    let cuts: Vec<usize> = top_level(s, "=")
        .into_iter()
        .filter(|&i| i == 0 || !matches!(s.as_bytes()[i - 1], b'<' | b'>' | b'!'))
        .collect();
    let &last = cuts.last()?;
    let lhs = s[..cuts[0]].trim();
    let rhs = s[last + 1..].trim();
    if lhs.is_empty() || rhs.is_empty() {
        return None;
    }
    if is_label(lhs) {
        let name = latex::parse(lhs).filter(|e| !e.vars.is_empty());
        return Some(Value::Labelled(label_key(lhs), Box::new(parse_depth(rhs, depth + 1)), name));
    }
    let sides: Vec<&str> = std::iter::once(0)
        .chain(cuts.iter().map(|i| i + 1))
        .zip(cuts.iter().copied().chain(std::iter::once(s.len())))
        .map(|(a, b)| s[a..b].trim())
        .collect();
    let parsed: Vec<Option<latex::Expr>> = sides.iter().map(|p| latex::parse(p)).collect();
    if parsed.iter().all(|e| e.as_ref().is_some_and(|e| e.vars.is_empty())) {
        return Some(parse_depth(rhs, depth + 1));
    }
    match (&parsed[0], &parsed[parsed.len() - 1]) {
        (Some(l), Some(r)) if parsed.len() == 2 => Some(Value::Equation(latex::Expr::difference(l, r))),
        _ => Some(Value::Text(s.split_whitespace().collect::<Vec<_>>().join(" "))),
    }
}

/// A name, not a quantity: letters (with subscripts, arguments and fraction bars), no digits of its own.
fn is_label(lhs: &str) -> bool {
    let mut rest = String::with_capacity(lhs.len());
    let mut chars = lhs.chars().peekable();
    let mut prev_letter = false;
    while let Some(c) = chars.next() {
        // `a_{37}`, `a_3`, `f(2)`: subscripts and arguments are part of the name.
        if c == '_' || (c == '(' && prev_letter) {
            let (open, close) = if c == '(' { ('(', ')') } else { ('{', '}') };
            if c == '(' || chars.peek() == Some(&open) {
                if c != '(' {
                    chars.next();
                }
                let mut depth = 1;
                for d in chars.by_ref() {
                    if d == open {
                        depth += 1;
                    } else if d == close {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                }
            } else {
                chars.next();
            }
            prev_letter = true;
            continue;
        }
        prev_letter = c.is_alphabetic();
        rest.push(c);
    }
    let letters = rest.replace("\\frac", "").replace("\\angle", "");
    letters.chars().any(char::is_alphabetic) && !letters.chars().any(|c| c.is_ascii_digit() || c == '\\')
}

fn label_key(lhs: &str) -> String {
    lhs.chars().filter(|c| !c.is_whitespace() && !matches!(c, '{' | '}')).collect()
}

/// `7:32` (a ratio): equal to a ratio of the same proportion.
fn ratio(s: &str, depth: usize) -> Option<Value> {
    let [at] = top_level(s, ":")[..] else { return None };
    let (a, b) = (parse_depth(&s[..at], depth + 1), parse_depth(&s[at + 1..], depth + 1));
    let (Value::Num(a), Value::Num(b)) = (a, b) else { return None };
    let exact = match (a.exact, b.exact) {
        (Some(x), Some(y)) if y.num != 0 => Some(Op::Div.apply(x, y).ok()?),
        (_, Some(y)) if y.num == 0 => return None,
        _ => None,
    };
    let approx = a.approx / b.approx;
    approx.is_finite().then_some(Value::Ratio(Num { exact, approx, percent: false, places: None }))
}

fn is_var(p: &str) -> bool {
    let p = p.strip_prefix('|').and_then(|p| p.strip_suffix('|')).unwrap_or(p);
    p.len() == 1 && p.chars().all(|c| c.is_ascii_alphabetic())
}

/// A one-variable inequality or chain (`x > 3`, `-2 <= x < 7`, `3 <= x`, `x != 2`, `1 <= |z| <= 2`) as the
/// set it describes (an interval or a union of them), so it compares with interval notation.
fn inequality(s: &str, depth: usize) -> Option<Value> {
    if !s.contains(['<', '>']) && !s.contains("!=") {
        return None;
    }
    let mut parts = Vec::new();
    let mut ops = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(['<', '>', '!']) {
        let b = rest.as_bytes()[i];
        if b == b'!' && !rest[i + 1..].starts_with('=') {
            return None;
        }
        parts.push(rest[..i].trim());
        let strict = b == b'!' || !rest[i + 1..].starts_with('=');
        // (less, strict, not-equal)
        ops.push((b == b'<', strict, b == b'!'));
        rest = &rest[i + if strict && b != b'!' { 1 } else { 2 }..];
    }
    parts.push(rest.trim());
    let bound = |p: &str| match parse_depth(p, depth + 1) {
        Value::Num(n) => Some(n),
        _ => None,
    };
    let (var, (lo, hi)) = match (parts.as_slice(), ops.as_slice()) {
        ([x, a], [(_, _, true)]) | ([a, x], [(_, _, true)]) if is_var(x) && !x.starts_with('|') => {
            let a = bound(a)?;
            let below = Value::Seq('(', vec![Value::Num(infinite(true)), Value::Num(a)], ')');
            let above = Value::Seq('(', vec![Value::Num(a), Value::Num(infinite(false))], ')');
            return Some(Value::Union(vec![below, above]));
        }
        ([x, a], [(less, strict, false)]) if is_var(x) => {
            let b = (bound(a)?, !strict);
            (x, if *less { ((infinite(true), false), b) } else { (b, (infinite(false), false)) })
        }
        ([a, x], [(less, strict, false)]) if is_var(x) => {
            let b = (bound(a)?, !strict);
            (x, if *less { (b, (infinite(false), false)) } else { ((infinite(true), false), b) })
        }
        ([a, x, b], [(l1, s1, false), (l2, s2, false)]) if is_var(x) && l1 == l2 => {
            let (a, b) = ((bound(a)?, !s1), (bound(b)?, !s2));
            (x, if *l1 { (a, b) } else { (b, a) })
        }
        _ => return None,
    };
    let interval = |lo: (Num, bool), hi: (Num, bool)| {
        Value::Seq(if lo.1 { '[' } else { '(' }, vec![Value::Num(lo.0), Value::Num(hi.0)], if hi.1 { ']' } else { ')' })
    };
    if !var.starts_with('|') {
        return Some(interval(lo, hi));
    }
    // `a <= |x| <= b`: the values of x, on both sides of 0.
    let neg = |(n, closed): (Num, bool)| {
        let exact = n.exact.and_then(|x| Op::Sub.apply(Rational::int(0), x).ok());
        (Num { exact, approx: -n.approx, percent: false, places: None }, closed)
    };
    if lo.0.approx <= 0.0 {
        return Some(interval(neg(hi), hi));
    }
    Some(Value::Union(vec![interval(neg(hi), neg(lo)), interval(lo, hi)]))
}

fn balanced(s: &str) -> bool {
    let mut depth = 0i64;
    for c in s.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// Split at commas, `;`, ` and ` and ` or ` outside brackets and braces (`x = 2 or x = 3` lists two values).
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i64;
    let mut start = 0;
    let mut skip_to = 0;
    for (i, c) in s.char_indices() {
        if i < skip_to {
            continue;
        }
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' | ';' if depth == 0 => {
                parts.push(s[start..i].trim());
                start = i + 1;
            }
            ' ' if depth == 0 => {
                if let Some(word) = [" and ", " or "].iter().find(|w| s[i..].starts_with(**w)) {
                    parts.push(s[start..i].trim());
                    start = i + word.len();
                    skip_to = start;
                }
            }
            _ => {}
        }
    }
    parts.push(s[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// `1 \pm \sqrt{2}`: the two values it stands for.
fn plus_minus(s: &str) -> Option<[String; 2]> {
    let [at] = top_level(s, "\\pm")[..] else { return None };
    let (head, tail) = (&s[..at], &s[at + "\\pm".len()..]);
    Some([format!("{head}+{tail}"), format!("{head}-{tail}")])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The team's table: `tests/fixtures/answer_cases.tsv` (gold, prediction, yes/no).
    pub(crate) fn cases() -> Vec<(&'static str, &'static str, bool)> {
        include_str!("../../tests/fixtures/answer_cases.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), 3, "bad case line: {l}");
                (f[0], f[1], f[2] == "yes")
            })
            .collect()
    }

    #[test]
    fn table() {
        let cases = cases();
        assert!(cases.len() >= 250, "{} cases", cases.len());
        let mut wrong = Vec::new();
        for (gold, pred, expected) in &cases {
            let got = equivalent(gold, pred, DEFAULT_TOLERANCE);
            if got.is_some() != *expected {
                wrong.push(format!("{gold:?} vs {pred:?}: expected {expected}, got {got:?}"));
            }
            // Every equivalence in the table holds in both directions.
            if *expected && equivalent(pred, gold, DEFAULT_TOLERANCE).is_none() {
                wrong.push(format!("{pred:?} vs {gold:?} (reversed): expected true"));
            }
        }
        assert!(wrong.is_empty(), "{} of {} cases wrong:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    }

    #[test]
    fn hostile_input_finishes_with_a_verdict() {
        let deep = format!("{}1{}", "{".repeat(100_000), "}".repeat(100_000));
        assert_eq!(equivalent(&deep, "1", DEFAULT_TOLERANCE), None);
        let huge = "9".repeat(1_000_000);
        assert_eq!(equivalent(&huge, "9", DEFAULT_TOLERANCE), None);
        assert_eq!(equivalent("10^{10^{10}}", "10^{10^{10}}", DEFAULT_TOLERANCE), Some(Method::Exact));
        let parens = format!("{}2{}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(equivalent(&parens, "2", DEFAULT_TOLERANCE), None);
    }
}
