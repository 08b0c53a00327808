//! The arithmetic subset of LaTeX that answers are written in, parsed into a tree and evaluated
//! exactly where the notation is exact: numbers (decimals, scientific notation), `+ - * / ^`, `\frac`,
//! `\sqrt`, `\sqrt[n]`, `\pi`, `\sin` and friends, parentheses and braces, implicit products (`2\sqrt{3}`,
//! `3x`, `x(x+1)`), mixed numbers (`3 1/2`, `3\frac12`) and a trailing `%`. Single letters and Greek
//! letters are variables, so symbolic answers can be compared by evaluating both at the same points.
//!
//! Work is bounded: nesting depth is capped, integer powers above [`MAX_EXPONENT`] and radicands that
//! overflow fall back to floating point or fail, so `10^{10^{10}}` is refused in microseconds.

use std::collections::BTreeSet;
use std::f64::consts::PI;

use crate::expr::{Op, Rational};

/// Exact powers are computed up to this exponent; larger ones are not evaluated.
pub const MAX_EXPONENT: i128 = 128;
/// Factorials are computed up to this argument (33! still fits an i128).
pub const MAX_FACTORIAL: i128 = 33;
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Lit(Rational),
    /// A value known only approximately.
    Approx(f64),
    Pi,
    Var(String),
    Bin(Op, Box<Node>, Box<Node>),
    Pow(Box<Node>, Box<Node>),
    Root(Box<Node>, u32),
    /// `n!`, exact up to [`MAX_FACTORIAL`].
    Factorial(Box<Node>),
    Func(Func, Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Ln,
    Log,
    Exp,
    Sec,
    Csc,
    Cot,
}

/// A parsed answer expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub node: Node,
    pub vars: BTreeSet<String>,
    /// Written with a trailing `%` (the value is already divided by 100).
    pub percent: bool,
    /// Decimal places when the whole answer is one decimal literal (`0.333` has 3).
    pub places: Option<u32>,
}

/// A value: exact when every step was exact, always with a floating-point approximation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct V {
    pub exact: Option<Rational>,
    pub approx: f64,
}

impl V {
    pub fn exact(r: Rational) -> V {
        V { exact: Some(r), approx: r.num as f64 / r.den as f64 }
    }
    fn approx(x: f64) -> Option<V> {
        x.is_finite().then_some(V { exact: None, approx: x })
    }
    fn op(self, op: Op, other: V) -> Option<V> {
        let approx = match op {
            Op::Add => self.approx + other.approx,
            Op::Sub => self.approx - other.approx,
            Op::Mul => self.approx * other.approx,
            Op::Div => self.approx / other.approx,
            Op::Rem => return None,
        };
        let exact = match (self.exact, other.exact) {
            (Some(a), Some(b)) => Some(op.apply(a, b).ok()?),
            _ => None,
        };
        approx.is_finite().then_some(V { exact, approx })
    }
}

/// Parse a whole answer; `None` when it is not (entirely) an expression of this subset.
pub fn parse(text: &str) -> Option<Expr> {
    let t = text.trim();
    let (t, percent) = match t.strip_suffix('%') {
        Some(rest) => (rest.trim(), true),
        None => (t, false),
    };
    let t = t.strip_suffix("percent").map(str::trim).unwrap_or(t);
    if t.is_empty() || has_word(t) {
        return None;
    }
    let node = match mixed_number(t) {
        Some(r) => Node::Lit(r),
        None => {
            let mut p = Parser { s: t.as_bytes(), pos: 0, depth: 0 };
            let node = p.sum()?;
            p.skip_ws();
            if p.pos != p.s.len() {
                return None;
            }
            node
        }
    };
    let node = if percent { Node::Bin(Op::Div, Box::new(node), Box::new(Node::Lit(Rational::int(100)))) } else { node };
    let mut vars = BTreeSet::new();
    collect_vars(&node, &mut vars);
    Some(Expr { node, vars, percent, places: decimal_places(t) })
}

/// Words, not a product of variables: three or more letters in a row outside a LaTeX command, or two
/// letters separated only by spaces (`x is 3`).
fn has_word(t: &str) -> bool {
    let mut run = 0;
    let mut command = false;
    let mut letter_then_space = false;
    for c in t.chars() {
        if c == '\\' {
            command = true;
            run = 0;
            letter_then_space = false;
        } else if c.is_ascii_alphabetic() {
            run += 1;
            if !command && (run >= 3 || letter_then_space) {
                return true;
            }
        } else if c == ' ' {
            letter_then_space = run > 0 && !command;
            run = 0;
        } else {
            run = 0;
            command = false;
            letter_then_space = false;
        }
    }
    false
}

fn collect_vars(node: &Node, vars: &mut BTreeSet<String>) {
    match node {
        // `e` is Euler's number, as in nearly every answer that writes it.
        Node::Var(v) if v == "e" => {}
        Node::Var(v) => {
            vars.insert(v.clone());
        }
        Node::Bin(_, a, b) | Node::Pow(a, b) => {
            collect_vars(a, vars);
            collect_vars(b, vars);
        }
        Node::Root(a, _) | Node::Func(_, a) | Node::Factorial(a) => collect_vars(a, vars),
        Node::Lit(_) | Node::Approx(_) | Node::Pi => {}
    }
}

impl Expr {
    /// The value with each variable bound by `env`.
    pub fn eval(&self, env: &dyn Fn(&str) -> Option<V>) -> Option<V> {
        eval(&self.node, env, 0)
    }

    /// A constant (exact when `exact` is).
    pub fn constant(exact: Option<Rational>, approx: f64) -> Expr {
        let node = match exact {
            Some(r) => Node::Lit(r),
            None => Node::Approx(approx),
        };
        Expr { node, vars: BTreeSet::new(), percent: false, places: None }
    }

    /// `a - b`, the form an equation `a = b` is compared in.
    pub fn difference(a: &Expr, b: &Expr) -> Expr {
        let node = Node::Bin(Op::Sub, Box::new(a.node.clone()), Box::new(b.node.clone()));
        Expr { node, vars: a.vars.union(&b.vars).cloned().collect(), percent: false, places: None }
    }

    /// The value of a variable-free expression.
    pub fn value(&self) -> Option<V> {
        self.eval(&|_| None)
    }
}

fn eval(node: &Node, env: &dyn Fn(&str) -> Option<V>, depth: usize) -> Option<V> {
    if depth > 4 * MAX_DEPTH {
        return None;
    }
    let ev = |n: &Node| eval(n, env, depth + 1);
    match node {
        Node::Lit(r) => Some(V::exact(*r)),
        Node::Approx(x) => V::approx(*x),
        Node::Pi => V::approx(PI),
        Node::Var(v) if v == "e" => V::approx(std::f64::consts::E),
        Node::Var(v) => env(v),
        Node::Bin(op, a, b) => ev(a)?.op(*op, ev(b)?),
        Node::Pow(a, b) => power(ev(a)?, ev(b)?),
        Node::Root(a, n) => root(ev(a)?, *n),
        Node::Factorial(a) => {
            let n = ev(a)?.exact?.as_int().filter(|n| (0..=MAX_FACTORIAL).contains(n))?;
            Some(V::exact(Rational::int((1..=n).product())))
        }
        Node::Func(f, a) => {
            let x = ev(a)?.approx;
            V::approx(match f {
                Func::Sin => x.sin(),
                Func::Cos => x.cos(),
                Func::Tan => x.tan(),
                Func::Ln => x.ln(),
                Func::Log => x.log10(),
                Func::Exp => x.exp(),
                Func::Sec => 1.0 / x.cos(),
                Func::Csc => 1.0 / x.sin(),
                Func::Cot => 1.0 / x.tan(),
            })
        }
    }
}

fn power(base: V, exponent: V) -> Option<V> {
    if let (Some(b), Some(e)) = (base.exact, exponent.exact.and_then(Rational::as_int)) {
        if e.abs() > MAX_EXPONENT {
            return None;
        }
        let mut acc = Rational::int(1);
        for _ in 0..e.abs() {
            acc = Op::Mul.apply(acc, b).ok()?;
        }
        return if e < 0 { V::exact(Rational::int(1)).op(Op::Div, V::exact(acc)) } else { Some(V::exact(acc)) };
    }
    if exponent.approx.abs() > MAX_EXPONENT as f64 {
        return None;
    }
    V::approx(base.approx.powf(exponent.approx))
}

fn root(radicand: V, n: u32) -> Option<V> {
    if let Some(r) = radicand.exact
        && let (Some(a), Some(b)) = (int_root(r.num, n), int_root(r.den, n))
    {
        return Some(V::exact(Rational::new(a, b).ok()?));
    }
    if radicand.approx < 0.0 {
        return None;
    }
    V::approx(radicand.approx.powf(1.0 / f64::from(n)))
}

fn int_root(x: i128, n: u32) -> Option<i128> {
    if x < 0 {
        return None;
    }
    let guess = (x as f64).powf(1.0 / f64::from(n)).round() as i128;
    (guess.max(1) - 1..=guess + 1).find(|&g| g.checked_pow(n) == Some(x))
}

fn decimal_places(t: &str) -> Option<u32> {
    let (int, frac) = t.trim().split_once('.')?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    (digits(int.trim_start_matches('-')) && digits(frac)).then_some(frac.len() as u32)
}

/// `3 1/2` or `3\frac{1}{2}`: a whole number followed by a proper fraction.
fn mixed_number(t: &str) -> Option<Rational> {
    let split = t.find([' ', '\\'])?;
    let (whole, frac) = (&t[..split], t[split..].trim());
    let w: i128 = whole.trim().parse().ok()?;
    if frac.contains('.') || !(frac.starts_with("\\frac") || frac.bytes().next()?.is_ascii_digit()) {
        return None;
    }
    let mut p = Parser { s: frac.as_bytes(), pos: 0, depth: 0 };
    let f = p.product()?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return None;
    }
    let f = eval(&f, &|_| None, 0)?.exact?;
    (w >= 0 && f.num > 0 && f.num < f.den).then(|| Op::Add.apply(Rational::int(w), f).ok())?
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

const GREEK: [&str; 12] =
    ["alpha", "beta", "gamma", "delta", "theta", "lambda", "mu", "phi", "omega", "sigma", "rho", "tau"];
const FUNCS: [(&str, Func); 9] = [
    ("sin", Func::Sin),
    ("cos", Func::Cos),
    ("tan", Func::Tan),
    ("sec", Func::Sec),
    ("csc", Func::Csc),
    ("cot", Func::Cot),
    ("ln", Func::Ln),
    ("log", Func::Log),
    ("exp", Func::Exp),
];

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.s[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// A LaTeX command name at the cursor (`\frac` → `frac`), without consuming it.
    fn command(&mut self) -> Option<&str> {
        self.skip_ws();
        let rest = self.s.get(self.pos..)?.strip_prefix(b"\\")?;
        let len = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
        std::str::from_utf8(&rest[..len]).ok().filter(|c| !c.is_empty())
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn sum(&mut self) -> Option<Node> {
        self.enter()?;
        let mut node = self.product()?;
        loop {
            let op = match self.peek() {
                Some(b'+') => Op::Add,
                Some(b'-') => Op::Sub,
                _ => break,
            };
            self.pos += 1;
            node = Node::Bin(op, Box::new(node), Box::new(self.product()?));
        }
        self.depth -= 1;
        Some(node)
    }

    fn product(&mut self) -> Option<Node> {
        let mut node = self.unary()?;
        loop {
            let op = if self.eat("*") {
                Op::Mul
            } else if self.eat("/") || self.eat("\\div") {
                Op::Div
            } else if self.starts_atom() {
                Op::Mul // implicit: 2\sqrt{3}, 3x, x(x+1)
            } else {
                break;
            };
            node = Node::Bin(op, Box::new(node), Box::new(self.unary()?));
        }
        Some(node)
    }

    fn starts_atom(&mut self) -> bool {
        match self.peek() {
            Some(b'(' | b'{') => true,
            Some(c) if c.is_ascii_alphabetic() => true,
            Some(b'\\') => self.command().is_some_and(|c| c != "div"),
            _ => false,
        }
    }

    fn unary(&mut self) -> Option<Node> {
        if self.eat("-") {
            let inner = self.unary()?;
            return Some(Node::Bin(Op::Mul, Box::new(Node::Lit(Rational::int(-1))), Box::new(inner)));
        }
        if self.eat("+") {
            return self.unary();
        }
        let mut base = self.atom()?;
        while self.s.get(self.pos) == Some(&b'!') {
            self.pos += 1;
            base = Node::Factorial(Box::new(base));
        }
        if self.eat("^") {
            let exponent = if self.eat("-") {
                Node::Bin(Op::Mul, Box::new(Node::Lit(Rational::int(-1))), Box::new(self.atom()?))
            } else {
                self.atom()?
            };
            return Some(Node::Pow(Box::new(base), Box::new(exponent)));
        }
        Some(base)
    }

    fn group(&mut self, open: &str, close: &str) -> Option<Node> {
        if !self.eat(open) {
            return None;
        }
        let node = self.sum()?;
        self.eat(close).then_some(node)
    }

    /// `{...}` or, as in `\frac12` and `x^2`, a single digit or letter.
    fn argument(&mut self) -> Option<Node> {
        match self.peek()? {
            b'{' => self.group("{", "}"),
            c if c.is_ascii_digit() => {
                self.pos += 1;
                Some(Node::Lit(Rational::int(i128::from(c - b'0'))))
            }
            c if c.is_ascii_alphabetic() => {
                self.pos += 1;
                Some(Node::Var((c as char).to_string()))
            }
            _ => self.atom(),
        }
    }

    fn atom(&mut self) -> Option<Node> {
        match self.peek()? {
            b'(' => self.group("(", ")"),
            b'{' => self.group("{", "}"),
            b'\\' => {
                let name = self.command()?.to_string();
                self.pos += 1 + name.len();
                match name.as_str() {
                    "frac" => {
                        let n = self.argument()?;
                        let d = self.argument()?;
                        Some(Node::Bin(Op::Div, Box::new(n), Box::new(d)))
                    }
                    "sqrt" => {
                        let index = if self.peek() == Some(b'[') {
                            self.pos += 1;
                            let start = self.pos;
                            while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                                self.pos += 1;
                            }
                            let n: u32 = std::str::from_utf8(&self.s[start..self.pos]).ok()?.parse().ok()?;
                            self.eat("]").then_some(n)?
                        } else {
                            2
                        };
                        ((2..=16).contains(&index)).then_some(())?;
                        Some(Node::Root(Box::new(self.argument()?), index))
                    }
                    "pi" => Some(Node::Pi),
                    g if GREEK.contains(&g) => Some(Node::Var(g.to_string())),
                    f => {
                        let func = FUNCS.iter().find(|(n, _)| *n == f)?.1;
                        // `\tan^2 x` is `(\tan x)^2`.
                        let exponent = if self.eat("^") { Some(self.argument()?) } else { None };
                        let node = Node::Func(func, Box::new(self.unary()?));
                        Some(match exponent {
                            Some(e) => Node::Pow(Box::new(node), Box::new(e)),
                            None => node,
                        })
                    }
                }
            }
            c if c.is_ascii_alphabetic() => {
                self.pos += 1;
                Some(Node::Var((c as char).to_string()))
            }
            b'0'..=b'9' | b'.' => self.number(),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Node> {
        self.skip_ws();
        let start = self.pos;
        while self.pos < self.s.len() && (self.s[self.pos].is_ascii_digit() || self.s[self.pos] == b'.') {
            self.pos += 1;
        }
        let mut value = decimal(std::str::from_utf8(&self.s[start..self.pos]).ok()?)?;
        // Scientific notation: 1.5e3, 2E-7 (an `e` followed by digits, not the variable e).
        if self.pos < self.s.len() && matches!(self.s[self.pos], b'e' | b'E') {
            let mut at = self.pos + 1;
            let negative = self.s.get(at) == Some(&b'-');
            if negative || self.s.get(at) == Some(&b'+') {
                at += 1;
            }
            let digits = self.s[at..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                let e: i128 = std::str::from_utf8(&self.s[at..at + digits]).ok()?.parse().ok()?;
                let scale = power(V::exact(Rational::int(10)), V::exact(Rational::int(if negative { -e } else { e })))?;
                value = Op::Mul.apply(value, scale.exact?).ok()?;
                self.pos = at + digits;
            }
        }
        Some(Node::Lit(value))
    }
}

/// A decimal literal as an exact rational.
pub(super) fn decimal(text: &str) -> Option<Rational> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') || int.len() + frac.len() > 36 {
        return None;
    }
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    Rational::new(digits, 10i128.checked_pow(frac.len() as u32)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> Option<String> {
        parse(s)?.value().map(|v| match v.exact {
            Some(r) => r.to_string(),
            None => format!("~{:.6}", v.approx),
        })
    }

    #[test]
    fn evaluates_the_subset() {
        for (text, expected) in [
            ("\\frac{3}{4}", "3/4"),
            ("\\frac12", "1/2"),
            ("3\\frac{1}{2}", "7/2"),
            ("3 1/2", "7/2"),
            ("1.5e3", "1500"),
            ("2^{10}", "1024"),
            ("2^{-2}", "1/4"),
            ("\\sqrt{16}", "4"),
            ("\\sqrt[3]{27}", "3"),
            ("2\\sqrt{3}", "~3.464102"),
            ("\\frac{\\pi}{2}", "~1.570796"),
            ("-(3 - 5) * 2", "4"),
            ("28%", "7/25"),
            ("\\sin(0)", "~0.000000"),
        ] {
            assert_eq!(value(text).as_deref(), Some(expected), "{text}");
        }
    }

    #[test]
    fn variables_and_words() {
        let e = parse("2x^2 + 3xy - \\frac{y}{\\theta}").unwrap();
        assert_eq!(e.vars.iter().map(String::as_str).collect::<Vec<_>>(), ["theta", "x", "y"]);
        assert!(parse("Evelyn").is_none());
        assert!(parse("odd").is_none());
        assert!(e.value().is_none());
    }

    #[test]
    fn bounded_on_hostile_input() {
        assert!(value("10^{10^{10}}").is_none());
        assert!(value(&format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000))).is_none());
        assert!(value("2^{1000}").is_none());
    }
}
