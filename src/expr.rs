//! Exact arithmetic on small integer expressions: parse `74 - ((96 + 37) / 7)`, evaluate with exact
//! rationals (no float rounding can make a wrong step look right), print with the fewest parentheses,
//! and break an expression into one step per operation. Synthetic tasks, Countdown and the step
//! checkers share it.

use std::fmt;

/// An exact fraction in lowest terms, denominator positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    /// Numerator.
    pub num: i128,
    /// Denominator, positive.
    pub den: i128,
}

impl Rational {
    /// An integer.
    pub fn int(n: i128) -> Self {
        Rational { num: n, den: 1 }
    }

    /// `num / den` in lowest terms.
    pub fn new(num: i128, den: i128) -> Result<Self, String> {
        if den == 0 {
            return Err("division by zero".into());
        }
        let g = gcd(num.unsigned_abs(), den.unsigned_abs()).max(1) as i128;
        let sign = if den < 0 { -1 } else { 1 };
        Ok(Rational { num: sign * num / g, den: sign * den / g })
    }

    /// The value as an integer, when it is one.
    pub fn as_int(self) -> Option<i128> {
        (self.den == 1).then_some(self.num)
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 { write!(f, "{}", self.num) } else { write!(f, "{}/{}", self.num, self.den) }
    }
}

/// An arithmetic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`, exact (a fraction when it does not divide).
    Div,
    /// Remainder with the divisor's sign, as Python's `%` (so `-2 % 23 == 21`).
    Rem,
}

impl Op {
    /// The operation's symbol.
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
            Op::Rem => '%',
        }
    }

    fn precedence(self) -> u8 {
        match self {
            Op::Add | Op::Sub => 1,
            Op::Mul | Op::Div | Op::Rem => 2,
        }
    }

    /// `a op b`, exactly; an error on division by zero, overflow or a remainder of a fraction.
    pub fn apply(self, a: Rational, b: Rational) -> Result<Rational, String> {
        let overflow = || "number too large".to_string();
        let mul = |x: i128, y: i128| x.checked_mul(y).ok_or_else(overflow);
        match self {
            Op::Add => Rational::new(
                mul(a.num, b.den)?.checked_add(mul(b.num, a.den)?).ok_or_else(overflow)?,
                mul(a.den, b.den)?,
            ),
            Op::Sub => Rational::new(
                mul(a.num, b.den)?.checked_sub(mul(b.num, a.den)?).ok_or_else(overflow)?,
                mul(a.den, b.den)?,
            ),
            Op::Mul => Rational::new(mul(a.num, b.num)?, mul(a.den, b.den)?),
            Op::Div => Rational::new(mul(a.num, b.den)?, mul(a.den, b.num)?),
            Op::Rem => match (a.as_int(), b.as_int()) {
                (_, Some(0)) => Err("remainder by zero".into()),
                (Some(x), Some(y)) => {
                    let r = x.rem_euclid(y);
                    Ok(Rational::int(if y < 0 && r != 0 { r + y } else { r }))
                }
                _ => Err("remainder of a fraction".into()),
            },
        }
    }
}

/// An expression tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A whole number.
    Num(i128),
    /// A binary operation.
    Bin(Box<Expr>, Op, Box<Expr>),
}

/// One operation of an evaluation: `expr` (on numbers only) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalStep {
    /// The operation on numbers, as printed (`7 * 3`).
    pub expr: String,
    /// Its value.
    pub value: Rational,
}

impl Expr {
    /// `a op b`.
    pub fn bin(a: Expr, op: Op, b: Expr) -> Expr {
        Expr::Bin(Box::new(a), op, Box::new(b))
    }

    /// The exact value; an error on division by zero or overflow.
    pub fn eval(&self) -> Result<Rational, String> {
        match self {
            Expr::Num(n) => Ok(Rational::int(*n)),
            Expr::Bin(a, op, b) => op.apply(a.eval()?, b.eval()?),
        }
    }

    /// The operations in evaluation order (left operand first), each on already computed numbers:
    /// `(17 + 25) * 3` gives `17 + 25 = 42`, then `42 * 3 = 126`.
    pub fn steps(&self) -> Result<Vec<EvalStep>, String> {
        let mut steps = Vec::new();
        self.collect_steps(&mut steps)?;
        Ok(steps)
    }

    fn collect_steps(&self, steps: &mut Vec<EvalStep>) -> Result<Rational, String> {
        match self {
            Expr::Num(n) => Ok(Rational::int(*n)),
            Expr::Bin(a, op, b) => {
                let (x, y) = (a.collect_steps(steps)?, b.collect_steps(steps)?);
                let value = op.apply(x, y)?;
                let operand = |r: Rational| if r.den == 1 { r.to_string() } else { format!("({r})") };
                steps.push(EvalStep { expr: format!("{} {} {}", operand(x), op.symbol(), operand(y)), value });
                Ok(value)
            }
        }
    }

    /// The numbers in the expression, left to right.
    pub fn numbers(&self) -> Vec<i128> {
        match self {
            Expr::Num(n) => vec![*n],
            Expr::Bin(a, _, b) => [a.numbers(), b.numbers()].concat(),
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Num(_) => 3,
            Expr::Bin(_, op, _) => op.precedence(),
        }
    }
}

/// Fewest parentheses that keep the tree: a right operand of equal precedence is bracketed too, so the
/// printed order of evaluation is the tree's (`a - (b + c)`, `a + (b + c)`).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Num(n) => write!(f, "{n}"),
            Expr::Bin(a, op, b) => {
                let p = op.precedence();
                if a.precedence() < p {
                    write!(f, "({a})")?;
                } else {
                    write!(f, "{a}")?;
                }
                write!(f, " {} ", op.symbol())?;
                if b.precedence() <= p { write!(f, "({b})") } else { write!(f, "{b}") }
            }
        }
    }
}

/// Parse integers, `+ - * / %` and parentheses (whitespace ignored; `×`, `÷` and `x` between numbers
/// are not accepted, a checker should see exactly what was written).
pub fn parse(text: &str) -> Result<Expr, String> {
    let mut p = Parser { chars: text.chars().filter(|c| !c.is_whitespace()).collect(), pos: 0, depth: 0 };
    let e = p.sum()?;
    if p.pos < p.chars.len() {
        return Err(format!("unexpected `{}` at character {}", p.chars[p.pos], p.pos + 1));
    }
    Ok(e)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

/// Nesting deeper than this is refused instead of overflowing the stack on hostile input.
const MAX_DEPTH: usize = 200;

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut e = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.pos += 1;
            let rhs = self.product()?;
            e = Expr::bin(e, if op == '+' { Op::Add } else { Op::Sub }, rhs);
        }
        Ok(e)
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut e = self.atom()?;
        while let Some(c @ ('*' | '/' | '%')) = self.peek() {
            self.pos += 1;
            let op = match c {
                '*' => Op::Mul,
                '/' => Op::Div,
                _ => Op::Rem,
            };
            let rhs = self.atom()?;
            e = Expr::bin(e, op, rhs);
        }
        Ok(e)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some('(') => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err("parentheses nested too deeply".into());
                }
                self.pos += 1;
                let e = self.sum()?;
                if self.peek() != Some(')') {
                    return Err(format!("missing `)` at character {}", self.pos + 1));
                }
                self.pos += 1;
                self.depth -= 1;
                Ok(e)
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
                let digits: String = self.chars[start..self.pos].iter().collect();
                digits.parse().map(Expr::Num).map_err(|_| format!("number `{digits}` is too large"))
            }
            Some(c) => Err(format!("unexpected `{c}` at character {}", self.pos + 1)),
            None => Err("the expression ends too early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_evaluates_and_prints_back() {
        for (text, value) in
            [("74 - ((96 + 37) / 7)", "55"), ("(17 + 25) * 3 - 8", "118"), ("39 / (36 - 33)", "13"), ("1 / 3", "1/3")]
        {
            let e = parse(text).unwrap();
            assert_eq!(e.eval().unwrap().to_string(), value, "{text}");
            assert_eq!(parse(&e.to_string()).unwrap(), e, "{text} printed as {e}");
        }
        assert_eq!(parse("74 - ((96 + 37) / 7)").unwrap().to_string(), "74 - (96 + 37) / 7");
        assert_eq!(parse("8 - (2 - 1)").unwrap().to_string(), "8 - (2 - 1)");
    }

    #[test]
    fn steps_follow_evaluation_order() {
        let steps = parse("74 - ((96 + 37) / 7)").unwrap().steps().unwrap();
        let got: Vec<String> = steps.iter().map(|s| format!("{} = {}", s.expr, s.value)).collect();
        assert_eq!(got, ["96 + 37 = 133", "133 / 7 = 19", "74 - 19 = 55"]);
    }

    #[test]
    fn remainder_is_pythons() {
        assert_eq!(parse("(5 - 7) % 23").unwrap().eval().unwrap(), Rational::int(21));
        assert_eq!(parse("(5 * 7) % 23").unwrap().eval().unwrap(), Rational::int(12));
    }

    #[test]
    fn hostile_input_is_refused_not_crashed() {
        assert!(parse(&"(".repeat(100_000)).is_err());
        assert!(parse("1 / 0").unwrap().eval().is_err());
        assert!(parse("99999999999999999999999999999999999999999").is_err());
        assert!(parse("1 +").is_err());
    }
}
