//! Condition text → syntax tree, with the byte position of every piece for errors.
//!
//! Grammar (Falco's, precedence from loosest to tightest):
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | primary
//! primary := "(" expr ")" | check | macro-name
//! check   := field "exists"
//!          | field binop value
//!          | field ("in" | "intersects" | "pmatch") "(" [value ("," value)*] ")"
//! field   := name ("." name)+ ["[" argument "]"]
//! binop   := "=" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "icontains"
//!          | "bcontains" | "startswith" | "bstartswith" | "endswith" | "glob" | "iglob"
//!          | "regex"
//! value   := "double quoted" | 'single quoted' | bare
//! ```
//!
//! A bare value runs until whitespace or one of `( ) , " ' =`; quoted values take `\"`,
//! `\'`, `\\`, `\n`, `\t`, `\r` and `\xHH` escapes. A name without a dot in a check
//! position is a macro; names in a `(...)` list may be list names (resolved when
//! compiling).

use std::fmt;

/// Nesting deeper than this is an error (a hostile condition must not overflow the stack).
pub const MAX_DEPTH: usize = 200;
/// Longest condition accepted, bytes.
pub const MAX_CONDITION_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    IContains,
    BContains,
    StartsWith,
    BStartsWith,
    EndsWith,
    Glob,
    IGlob,
    Regex,
    In,
    Intersects,
    PMatch,
    Exists,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "contains",
            Op::IContains => "icontains",
            Op::BContains => "bcontains",
            Op::StartsWith => "startswith",
            Op::BStartsWith => "bstartswith",
            Op::EndsWith => "endswith",
            Op::Glob => "glob",
            Op::IGlob => "iglob",
            Op::Regex => "regex",
            Op::In => "in",
            Op::Intersects => "intersects",
            Op::PMatch => "pmatch",
            Op::Exists => "exists",
        }
    }

    /// Operators whose right side is a `(...)` list.
    pub fn takes_list(self) -> bool {
        matches!(self, Op::In | Op::Intersects | Op::PMatch)
    }

    /// An operator as written in an exception's `comps` (or in a condition).
    pub fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "=" | "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => return WORD_OPS.iter().find(|(w, _)| *w == text).map(|(_, op)| *op),
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const WORD_OPS: &[(&str, Op)] = &[
    ("contains", Op::Contains),
    ("icontains", Op::IContains),
    ("bcontains", Op::BContains),
    ("startswith", Op::StartsWith),
    ("bstartswith", Op::BStartsWith),
    ("endswith", Op::EndsWith),
    ("glob", Op::Glob),
    ("iglob", Op::IGlob),
    ("regex", Op::Regex),
    ("intersects", Op::Intersects),
    ("in", Op::In),
    ("pmatch", Op::PMatch),
    ("exists", Op::Exists),
];

/// A literal on the right of an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    pub text: String,
    /// Written in quotes (never a list name).
    pub quoted: bool,
    pub pos: usize,
}

/// A field reference: `proc.aname[2]` is name `proc.aname`, argument `2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    pub name: String,
    pub arg: Option<String>,
    pub pos: usize,
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.arg {
            Some(arg) => write!(f, "{}[{}]", self.name, arg),
            None => f.write_str(&self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rhs {
    None,
    Value(Literal),
    List(Vec<Literal>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Macro {
        name: String,
        pos: usize,
    },
    Check {
        field: FieldRef,
        op: Op,
        rhs: Rhs,
        pos: usize,
    },
}

/// A syntax error at a byte position of the condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub pos: usize,
}

pub fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.len() > MAX_CONDITION_BYTES {
        return Err(ParseError {
            message: format!(
                "condition is {} bytes long; at most {MAX_CONDITION_BYTES} are accepted",
                text.len()
            ),
            pos: 0,
        });
    }
    let mut p = Parser {
        src: text,
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error("empty condition"));
    }
    let expr = p.expr()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(format!("unexpected {}", p.describe_next())));
    }
    Ok(expr)
}

/// Parses one list item as written in a YAML `items:` entry or an exception value: the
/// whole (trimmed) text, or one quoted string.
pub fn parse_list_item(text: &str) -> Literal {
    let trimmed = text.trim();
    if let Some(first) = trimmed.chars().next()
        && (first == '"' || first == '\'')
    {
        let mut p = Parser {
            src: trimmed,
            pos: 0,
            depth: 0,
        };
        if let Ok(value) = p.quoted()
            && p.at_end()
        {
            return Literal {
                text: value,
                quoted: true,
                pos: 0,
            };
        }
    }
    Literal {
        text: trimmed.to_string(),
        quoted: false,
        pos: 0,
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            message: message.into(),
            pos: self.pos,
        }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            None => "end of condition".to_string(),
            Some(_) => {
                let word: String = self
                    .rest()
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .take(24)
                    .collect();
                format!("'{word}'")
            }
        }
    }

    /// The keyword `word` at the cursor, followed by a non-name character.
    fn keyword(&mut self, word: &str) -> bool {
        let rest = self.rest();
        if rest.len() >= word.len()
            && rest.is_char_boundary(word.len())
            && rest[..word.len()].eq_ignore_ascii_case(word)
            && !rest[word.len()..].chars().next().is_some_and(is_name_char)
        {
            self.pos += word.len();
            return true;
        }
        false
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let mut terms = vec![self.and()?];
        loop {
            self.skip_ws();
            if self.keyword("or") {
                terms.push(self.and()?);
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or(Expr::And(Vec::new()))
        } else {
            Expr::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.unary()?];
        loop {
            self.skip_ws();
            if self.keyword("and") {
                terms.push(self.unary()?);
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or(Expr::And(Vec::new()))
        } else {
            Expr::And(terms)
        })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        if self.keyword("not") {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.error("condition ends where a check was expected")),
            Some('(') => {
                let open = self.pos;
                self.bump();
                let inner = self.expr()?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return Err(ParseError {
                        message: format!(
                            "missing ')' for the '(' at position {} (found {})",
                            open + 1,
                            self.describe_next()
                        ),
                        pos: self.pos,
                    });
                }
                self.bump();
                Ok(inner)
            }
            Some(c) if is_name_start(c) => self.check_or_macro(),
            Some(_) => Err(self.error(format!(
                "expected a field, a macro, 'not' or '(', found {}",
                self.describe_next()
            ))),
        }
    }

    fn name(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if is_name_char(c) || c == '.' {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
        &self.src[start..self.pos]
    }

    fn check_or_macro(&mut self) -> Result<Expr, ParseError> {
        let start = self.pos;
        let name = self.name();
        if name.ends_with('.') || name.contains("..") {
            return Err(ParseError {
                message: format!("invalid field name '{name}'"),
                pos: start,
            });
        }
        let mut arg = None;
        if self.peek() == Some('[') {
            let open = self.pos;
            self.bump();
            let arg_start = self.pos;
            while let Some(c) = self.peek() {
                if c == ']' {
                    break;
                }
                self.pos += c.len_utf8();
            }
            if self.peek() != Some(']') {
                return Err(ParseError {
                    message: "missing ']' after a field argument".to_string(),
                    pos: open,
                });
            }
            arg = Some(self.src[arg_start..self.pos].to_string());
            self.bump();
        }
        if !name.contains('.') {
            if arg.is_some() {
                return Err(ParseError {
                    message: format!("'{name}' is not a field (fields look like 'proc.name')"),
                    pos: start,
                });
            }
            return Ok(Expr::Macro {
                name: name.to_string(),
                pos: start,
            });
        }
        let field = FieldRef {
            name: name.to_string(),
            arg,
            pos: start,
        };
        self.skip_ws();
        let op_pos = self.pos;
        let op = self.operator().ok_or_else(|| ParseError {
            message: format!(
                "expected an operator after field '{field}', found {}",
                self.describe_next()
            ),
            pos: op_pos,
        })?;
        let rhs = match op {
            Op::Exists => Rhs::None,
            op if op.takes_list() => Rhs::List(self.list(op)?),
            _ => {
                self.skip_ws();
                Rhs::Value(self.value(op)?)
            }
        };
        Ok(Expr::Check {
            field,
            op,
            rhs,
            pos: start,
        })
    }

    fn operator(&mut self) -> Option<Op> {
        for (sym, op) in [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ] {
            if self.rest().starts_with(sym) {
                self.pos += sym.len();
                return Some(op);
            }
        }
        for (word, op) in WORD_OPS {
            if self.keyword(word) {
                return Some(*op);
            }
        }
        None
    }

    fn list(&mut self, op: Op) -> Result<Vec<Literal>, ParseError> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.error(format!(
                "'{op}' needs a list in parentheses, found {}",
                self.describe_next()
            )));
        }
        let open = self.pos;
        self.bump();
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(')') {
            self.bump();
            return Ok(items);
        }
        loop {
            self.skip_ws();
            items.push(self.value(op)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(')') => {
                    self.bump();
                    return Ok(items);
                }
                None => {
                    return Err(ParseError {
                        message: format!(
                            "missing ')' for the list opened at position {}",
                            open + 1
                        ),
                        pos: self.pos,
                    });
                }
                Some(_) => {
                    return Err(self.error(format!(
                        "expected ',' or ')' in a list, found {}",
                        self.describe_next()
                    )));
                }
            }
        }
    }

    fn value(&mut self, op: Op) -> Result<Literal, ParseError> {
        let pos = self.pos;
        match self.peek() {
            Some('"' | '\'') => Ok(Literal {
                text: self.quoted()?,
                quoted: true,
                pos,
            }),
            _ => {
                while let Some(c) = self.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | ',' | '"' | '\'' | '=') {
                        break;
                    }
                    self.pos += c.len_utf8();
                }
                if self.pos == pos {
                    return Err(self.error(format!(
                        "'{op}' needs a value, found {}",
                        self.describe_next()
                    )));
                }
                Ok(Literal {
                    text: self.src[pos..self.pos].to_string(),
                    quoted: false,
                    pos,
                })
            }
        }
    }

    fn quoted(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        let Some(quote) = self.bump() else {
            return Err(self.error("expected a quoted string"));
        };
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(ParseError {
                    message: format!("unterminated string starting with {quote}"),
                    pos: start,
                });
            };
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let escape_pos = self.pos - 1;
            match self.bump() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('x') => {
                    let hex = self.rest().get(..2).unwrap_or("");
                    let byte = u8::from_str_radix(hex, 16).map_err(|_| ParseError {
                        message: "'\\x' must be followed by two hex digits".to_string(),
                        pos: escape_pos,
                    })?;
                    if byte == 0 || byte > 0x7f {
                        return Err(ParseError {
                            message: format!(
                                "'\\x{hex}': only printable ASCII and control bytes (01-7f) can be escaped"
                            ),
                            pos: escape_pos,
                        });
                    }
                    self.pos += 2;
                    out.push(char::from(byte));
                }
                Some(c @ ('"' | '\'' | '\\')) => out.push(c),
                // Unknown escapes keep the backslash (Windows-ish paths, regexes).
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => {
                    return Err(ParseError {
                        message: format!("unterminated string starting with {quote}"),
                        pos: start,
                    });
                }
            }
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, op: Op, value: &str) -> Expr {
        Expr::Check {
            field: FieldRef {
                name: name.into(),
                arg: None,
                pos: 0,
            },
            op,
            rhs: Rhs::Value(Literal {
                text: value.into(),
                quoted: false,
                pos: 0,
            }),
            pos: 0,
        }
    }

    /// The tree without positions, for comparisons.
    fn strip(e: Expr) -> Expr {
        match e {
            Expr::And(v) => Expr::And(v.into_iter().map(strip).collect()),
            Expr::Or(v) => Expr::Or(v.into_iter().map(strip).collect()),
            Expr::Not(b) => Expr::Not(Box::new(strip(*b))),
            Expr::Macro { name, .. } => Expr::Macro { name, pos: 0 },
            Expr::Check {
                mut field, op, rhs, ..
            } => {
                field.pos = 0;
                let rhs = match rhs {
                    Rhs::None => Rhs::None,
                    Rhs::Value(mut l) => {
                        l.pos = 0;
                        Rhs::Value(l)
                    }
                    Rhs::List(items) => Rhs::List(
                        items
                            .into_iter()
                            .map(|mut l| {
                                l.pos = 0;
                                l
                            })
                            .collect(),
                    ),
                };
                Expr::Check {
                    field,
                    op,
                    rhs,
                    pos: 0,
                }
            }
        }
    }

    #[test]
    fn precedence_not_over_and_over_or() {
        let e = strip(parse("a.b=1 or not c.d=2 and e.f=3").unwrap());
        assert_eq!(
            e,
            Expr::Or(vec![
                check("a.b", Op::Eq, "1"),
                Expr::And(vec![
                    Expr::Not(Box::new(check("c.d", Op::Eq, "2"))),
                    check("e.f", Op::Eq, "3"),
                ]),
            ])
        );
        let grouped = strip(parse("(a.b=1 or c.d=2) and e.f=3").unwrap());
        assert!(matches!(grouped, Expr::And(ref v) if matches!(v[0], Expr::Or(_))));
    }

    #[test]
    fn operators_and_values() {
        for (text, op) in [
            ("=", Op::Eq),
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            ("<=", Op::Le),
            (">", Op::Gt),
            (">=", Op::Ge),
            (" contains ", Op::Contains),
            (" icontains ", Op::IContains),
            (" bcontains ", Op::BContains),
            (" startswith ", Op::StartsWith),
            (" bstartswith ", Op::BStartsWith),
            (" endswith ", Op::EndsWith),
            (" glob ", Op::Glob),
            (" iglob ", Op::IGlob),
            (" regex ", Op::Regex),
        ] {
            let e = strip(parse(&format!("x.y{text}v")).unwrap());
            assert_eq!(e, check("x.y", op, "v"), "{text}");
        }
        let e = parse("evt.dir=<").unwrap();
        assert!(matches!(e, Expr::Check { rhs: Rhs::Value(ref l), .. } if l.text == "<"));
        let e = parse(r#"proc.cmdline contains "a \"b\" \x41\\" "#).unwrap();
        assert!(
            matches!(e, Expr::Check { rhs: Rhs::Value(ref l), .. } if l.text == "a \"b\" A\\" && l.quoted)
        );
        let e = parse("fd.typechar='f'").unwrap();
        assert!(matches!(e, Expr::Check { rhs: Rhs::Value(ref l), .. } if l.text == "f"));
        let e = parse("k8s.pod.label[app.kubernetes.io/name] exists").unwrap();
        assert!(matches!(e, Expr::Check { ref field, op: Op::Exists, .. }
            if field.arg.as_deref() == Some("app.kubernetes.io/name")));
    }

    #[test]
    fn lists() {
        let e = parse(r#"proc.name in (bash, "my sh", runc:[0:PARENT], shell_binaries)"#).unwrap();
        let Expr::Check {
            rhs: Rhs::List(items),
            ..
        } = e
        else {
            panic!("not a list check");
        };
        let texts: Vec<&str> = items.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            vec!["bash", "my sh", "runc:[0:PARENT]", "shell_binaries"]
        );
        assert!(items[1].quoted && !items[3].quoted);
        assert!(
            matches!(parse("a.b in ()").unwrap(), Expr::Check { rhs: Rhs::List(ref v), .. } if v.is_empty())
        );
        assert!(matches!(
            parse("a.b pmatch (/etc, /root)").unwrap(),
            Expr::Check { op: Op::PMatch, .. }
        ));
        assert!(matches!(
            parse("a.b intersects (x)").unwrap(),
            Expr::Check {
                op: Op::Intersects,
                ..
            }
        ));
    }

    #[test]
    fn macros_and_keywords() {
        let e = strip(parse("spawned_process and not container").unwrap());
        assert_eq!(
            e,
            Expr::And(vec![
                Expr::Macro {
                    name: "spawned_process".into(),
                    pos: 0
                },
                Expr::Not(Box::new(Expr::Macro {
                    name: "container".into(),
                    pos: 0
                })),
            ])
        );
        // Names that start with a keyword are names.
        let e = strip(parse("notebook or organic").unwrap());
        assert!(matches!(e, Expr::Or(ref v) if v.len() == 2));
        // Keywords are case-insensitive, as in Falco.
        assert!(parse("a.b=1 AND NOT c.d=2").is_ok());
    }

    #[test]
    fn errors_have_positions() {
        let cases = [
            ("", 0, "empty condition"),
            (
                "proc.name",
                9,
                "expected an operator after field 'proc.name'",
            ),
            ("proc.name =", 11, "'=' needs a value"),
            ("(proc.name=a", 12, "missing ')' for the '(' at position 1"),
            ("proc.name in bash", 13, "'in' needs a list in parentheses"),
            ("proc.name in (a b)", 16, "expected ',' or ')' in a list"),
            ("proc.name in (a,", 16, "'in' needs a value"),
            ("proc.name = \"abc", 12, "unterminated string"),
            ("proc.name=a )", 12, "unexpected ')'"),
            (
                "proc.name=a and",
                15,
                "condition ends where a check was expected",
            ),
            ("= x", 0, "expected a field, a macro, 'not' or '('"),
            ("proc.aname[2 = x", 10, "missing ']'"),
            ("proc. = x", 0, "invalid field name 'proc.'"),
            ("macro[1]", 0, "'macro' is not a field"),
            (
                "a.b = \"\\x4\"",
                7,
                "'\\x' must be followed by two hex digits",
            ),
            ("a.b = \"\\x00\"", 7, "only printable ASCII"),
        ];
        for (text, pos, message) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.message.contains(message),
                "{text:?}: {:?} lacks {message:?}",
                err.message
            );
            assert_eq!(err.pos, pos, "{text:?}: {}", err.message);
        }
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = "(".repeat(10_000) + "a.b=1" + &")".repeat(10_000);
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
        let nots = "not ".repeat(10_000) + "a.b=1";
        assert!(parse(&nots).unwrap_err().message.contains("nested deeper"));
        let long = "a.b=1 or ".repeat(40_000) + "a.b=1";
        assert!(parse(&long).unwrap_err().message.contains("bytes long"));
        // Multi-byte characters never split.
        assert!(parse("a.b = é(").is_err());
        assert!(parse("é").is_err());
    }

    #[test]
    fn list_items() {
        assert_eq!(parse_list_item(" bash ").text, "bash");
        let quoted = parse_list_item(r#""sh -c uname -p 2> /dev/null""#);
        assert!(quoted.quoted);
        assert_eq!(quoted.text, "sh -c uname -p 2> /dev/null");
        // Quotes that do not enclose the whole item are kept.
        assert_eq!(parse_list_item(r#""a" b"#).text, r#""a" b"#);
    }
}
