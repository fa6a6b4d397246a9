//! Syntax tree → evaluable tree: macros and lists inlined, fields resolved, right sides
//! parsed once for their field's type (numbers, networks, flags, globs, regexes, sets).

use std::net::IpAddr;

use globset::{GlobBuilder, GlobMatcher};
use ipnet::IpNet;
use memchr::memmem::Finder;
use regex::Regex;
use rustc_hash::{FxHashMap, FxHashSet};

use super::fields::{EvalCtx, Field, FieldError, FieldKind, FieldType, FlagKind, Value};
use super::parser::{Expr, FieldRef, Literal, Op, Rhs};
use crate::event::names::{self, OpenFlagTest};
use crate::event::{EventType, EventTypeSet};

/// The evaluable form of a condition.
#[derive(Debug, Clone)]
pub enum Node {
    True,
    False,
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Not(Box<Node>),
    Check(Box<Check>),
}

impl Node {
    #[inline]
    pub fn eval(&self, ctx: &EvalCtx<'_>) -> bool {
        match self {
            Node::True => true,
            Node::False => false,
            Node::And(nodes) => nodes.iter().all(|n| n.eval(ctx)),
            Node::Or(nodes) => nodes.iter().any(|n| n.eval(ctx)),
            Node::Not(node) => !node.eval(ctx),
            Node::Check(check) => check.eval(ctx),
        }
    }

    /// Event types for which the node can be true, and those for which it can be false.
    /// Only `evt.type` checks narrow the sets; the rule index uses the first.
    pub fn event_types(&self) -> (EventTypeSet, EventTypeSet) {
        let all = EventTypeSet::all();
        match self {
            Node::True => (all, EventTypeSet::EMPTY),
            Node::False => (EventTypeSet::EMPTY, all),
            Node::And(nodes) => nodes.iter().fold((all, EventTypeSet::EMPTY), |(t, f), n| {
                let (nt, nf) = n.event_types();
                (t.intersection(nt), f.union(nf))
            }),
            Node::Or(nodes) => nodes.iter().fold((EventTypeSet::EMPTY, all), |(t, f), n| {
                let (nt, nf) = n.event_types();
                (t.union(nt), f.intersection(nf))
            }),
            Node::Not(node) => {
                let (t, f) = node.event_types();
                (f, t)
            }
            Node::Check(check) => match check.type_set {
                Some(set) => (set, set.complement()),
                None => (all, all),
            },
        }
    }

    fn and(mut nodes: Vec<Node>) -> Node {
        let mut flat = Vec::with_capacity(nodes.len());
        for node in nodes.drain(..) {
            match node {
                Node::True => {}
                Node::False => return Node::False,
                Node::And(inner) => flat.extend(inner.into_vec()),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Node::True,
            1 => flat.pop().unwrap_or(Node::True),
            _ => Node::And(flat.into_boxed_slice()),
        }
    }

    fn or(mut nodes: Vec<Node>) -> Node {
        let mut flat = Vec::with_capacity(nodes.len());
        for node in nodes.drain(..) {
            match node {
                Node::False => {}
                Node::True => return Node::True,
                Node::Or(inner) => flat.extend(inner.into_vec()),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Node::False,
            1 => flat.pop().unwrap_or(Node::False),
            _ => Node::Or(flat.into_boxed_slice()),
        }
    }

    fn not(node: Node) -> Node {
        match node {
            Node::True => Node::False,
            Node::False => Node::True,
            Node::Not(inner) => *inner,
            other => Node::Not(Box::new(other)),
        }
    }

    /// Number of checks (a size measure for tests and docs).
    pub fn checks(&self) -> usize {
        match self {
            Node::True | Node::False => 0,
            Node::And(n) | Node::Or(n) => n.iter().map(Node::checks).sum(),
            Node::Not(n) => n.checks(),
            Node::Check(_) => 1,
        }
    }
}

/// One comparison.
#[derive(Debug, Clone)]
pub struct Check {
    pub field: Field,
    operand: Operand,
    /// For `evt.type` comparisons: the event types for which the check is true.
    type_set: Option<EventTypeSet>,
    /// `!=` on a field with several values (`fd.net`, `proc.aname`): true when the field
    /// has values and none equals (`operand` is then the `=` test).
    negate_all: bool,
}

impl Check {
    #[inline]
    fn eval(&self, ctx: &EvalCtx<'_>) -> bool {
        if let Some(set) = self.type_set {
            return set.contains(ctx.event.event_type);
        }
        if self.negate_all {
            let mut seen = false;
            let hit = self.field.any_value(ctx, &mut |v| {
                seen = true;
                self.operand.test(v)
            });
            return seen && !hit;
        }
        self.field.any_value(ctx, &mut |v| self.operand.test(v))
    }
}

#[derive(Debug, Clone)]
enum PathComponent {
    Literal(Box<str>),
    Glob(GlobMatcher),
}

#[derive(Debug, Clone)]
enum StrSet {
    Small(Box<[Box<str>]>),
    Hashed(FxHashSet<Box<str>>),
}

impl StrSet {
    fn new(items: Vec<String>) -> StrSet {
        if items.len() <= 8 {
            StrSet::Small(items.into_iter().map(Box::from).collect())
        } else {
            StrSet::Hashed(items.into_iter().map(Box::from).collect())
        }
    }

    fn contains(&self, text: &str) -> bool {
        match self {
            StrSet::Small(items) => items.iter().any(|i| &**i == text),
            StrSet::Hashed(set) => set.contains(text),
        }
    }
}

#[derive(Debug, Clone)]
enum FlagTest {
    Open(OpenFlagTest),
    Bits(FlagKind, u64),
}

#[derive(Debug, Clone, PartialEq)]
enum EnumKey {
    Raw(i64),
    Name(Box<str>),
}

#[derive(Debug, Clone)]
enum Operand {
    Exists,
    StrEq(Box<str>),
    StrNe(Box<str>),
    StrLess(Op, Box<str>),
    Contains(Finder<'static>),
    IContains(Box<[u8]>),
    StartsWith(Box<str>),
    EndsWith(Box<str>),
    BStartsWith(Box<[u8]>),
    Glob(GlobMatcher),
    Regex(Regex),
    PMatch(Box<[Box<[PathComponent]>]>),
    StrIn(StrSet),
    IntCmp(Op, i64),
    IntIn(Box<[i64]>),
    BoolIn(Box<[bool]>, bool),
    NetIn(Box<[IpNet]>, bool),
    Flag(FlagTest),
    FlagsRaw(u64, bool),
    EnumIn(Box<[EnumKey]>, bool),
}

impl Operand {
    #[inline]
    fn test(&self, value: &Value<'_>) -> bool {
        match self {
            Operand::Exists => true,
            Operand::IntCmp(op, rhs) => match value {
                Value::Int(v) => match op {
                    Op::Eq => v == rhs,
                    Op::Ne => v != rhs,
                    Op::Lt => v < rhs,
                    Op::Le => v <= rhs,
                    Op::Gt => v > rhs,
                    Op::Ge => v >= rhs,
                    _ => false,
                },
                _ => false,
            },
            Operand::IntIn(set) => matches!(value, Value::Int(v) if set.contains(v)),
            Operand::BoolIn(set, negate) => match value {
                Value::Bool(b) => set.contains(b) != *negate,
                _ => false,
            },
            Operand::NetIn(nets, negate) => match value {
                Value::Ip(ip) => {
                    let ip = canonical(*ip);
                    nets.iter().any(|n| n.contains(&ip)) != *negate
                }
                _ => false,
            },
            Operand::Flag(test) => match (value, test) {
                (Value::Flags(bits, FlagKind::Open), FlagTest::Open(t)) => t.matches(*bits),
                (Value::Flags(bits, kind), FlagTest::Bits(want_kind, want)) => {
                    kind == want_kind && bits & want == *want
                }
                _ => false,
            },
            Operand::FlagsRaw(raw, negate) => match value {
                Value::Flags(bits, _) => (bits == raw) != *negate,
                _ => false,
            },
            Operand::EnumIn(keys, negate) => match value {
                Value::Enum(raw, name) => {
                    let hit = keys.iter().any(|k| match k {
                        EnumKey::Raw(r) => r == raw,
                        EnumKey::Name(n) => Some(&**n) == *name,
                    });
                    hit != *negate
                }
                _ => false,
            },
            text_op => {
                let text = value.as_text();
                let text = text.as_ref();
                match text_op {
                    Operand::StrEq(s) => text == &**s,
                    Operand::StrNe(s) => text != &**s,
                    Operand::StrLess(op, s) => match op {
                        Op::Lt => text < &**s,
                        Op::Le => text <= &**s,
                        Op::Gt => text > &**s,
                        _ => text >= &**s,
                    },
                    Operand::Contains(finder) => finder.find(text.as_bytes()).is_some(),
                    Operand::IContains(needle) => icontains(text.as_bytes(), needle),
                    Operand::StartsWith(s) => text.starts_with(&**s),
                    Operand::EndsWith(s) => text.ends_with(&**s),
                    Operand::BStartsWith(b) => text.as_bytes().starts_with(b),
                    Operand::Glob(g) => g.is_match(text),
                    Operand::Regex(r) => r.is_match(text),
                    Operand::PMatch(prefixes) => pmatch(text, prefixes),
                    Operand::StrIn(set) => set.contains(text),
                    _ => false,
                }
            }
        }
    }
}

/// v4-mapped v6 addresses compare as v4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn icontains(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn pmatch(path: &str, prefixes: &[Box<[PathComponent]>]) -> bool {
    prefixes.iter().any(|prefix| {
        let mut parts = path.split('/').filter(|c| !c.is_empty());
        prefix.iter().all(|want| match parts.next() {
            None => false,
            Some(part) => match want {
                PathComponent::Literal(l) => &**l == part,
                PathComponent::Glob(g) => g.is_match(part),
            },
        })
    })
}

/// A compile error at a position of the condition (or of the named macro's condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub message: String,
    pub pos: usize,
    /// The field was unknown (a rule with `skip-if-unknown-filter` is skipped instead).
    pub unknown_field: bool,
}

impl CompileError {
    fn at(pos: usize, message: impl Into<String>) -> CompileError {
        CompileError {
            message: message.into(),
            pos,
            unknown_field: false,
        }
    }
}

/// What conditions can refer to: macros (parsed) and lists (items resolved).
pub struct Definitions<'d> {
    pub macros: &'d FxHashMap<String, Expr>,
    pub lists: &'d FxHashMap<String, Vec<String>>,
}

/// Suffixes of Falco's list naming convention: an unquoted, undefined name with one of
/// these in a `(...)` list is taken as a misspelt or missing list, not a literal value.
const LIST_NAME_SUFFIXES: &[&str] = &[
    "_binaries",
    "_images",
    "_files",
    "_file_names",
    "_names",
    "_directories",
    "_dirs",
    "_ports",
    "_procs",
    "_containers",
    "_addresses",
    "_domains",
    "_networks",
    "_list",
    "_cmdlines",
    "_repositories",
];

fn looks_like_list_name(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && LIST_NAME_SUFFIXES.iter().any(|s| text.ends_with(s))
}

/// Compiles conditions against one set of definitions, memoising compiled macros.
pub struct Compiler<'d> {
    defs: Definitions<'d>,
    compiled: FxHashMap<String, Result<Node, ()>>,
    stack: Vec<String>,
    /// Non-fatal findings (`evt.type` values node-agent never captures).
    pub warnings: Vec<String>,
}

impl<'d> Compiler<'d> {
    pub fn new(defs: Definitions<'d>) -> Compiler<'d> {
        Compiler {
            defs,
            compiled: FxHashMap::default(),
            stack: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Compiles a macro on its own; errors are positions in the macro's condition.
    pub fn compile_macro(&mut self, name: &str) -> Result<Node, CompileError> {
        if let Some(done) = self.compiled.get(name) {
            return done.clone().map_err(|()| {
                CompileError::at(
                    0,
                    format!("macro '{name}' has errors (reported with the macro)"),
                )
            });
        }
        let Some(expr) = self.defs.macros.get(name) else {
            return Err(CompileError::at(0, format!("unknown macro '{name}'")));
        };
        self.stack.push(name.to_string());
        let result = self.compile(expr);
        self.stack.pop();
        self.compiled
            .insert(name.to_string(), result.clone().map_err(|_| ()));
        result
    }

    pub fn compile(&mut self, expr: &Expr) -> Result<Node, CompileError> {
        Ok(match expr {
            Expr::And(items) => Node::and(
                items
                    .iter()
                    .map(|e| self.compile(e))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Or(items) => Node::or(
                items
                    .iter()
                    .map(|e| self.compile(e))
                    .collect::<Result<_, _>>()?,
            ),
            Expr::Not(inner) => Node::not(self.compile(inner)?),
            Expr::Macro { name, pos } => {
                if let Some(at) = self.stack.iter().position(|m| m == name) {
                    let cycle = self.stack[at..].join(" → ");
                    return Err(CompileError::at(
                        *pos,
                        format!("macro '{name}' refers to itself ({cycle} → {name})"),
                    ));
                }
                if !self.defs.macros.contains_key(name) {
                    let hint = if self.defs.lists.contains_key(name) {
                        format!(" ('{name}' is a list: use it inside 'in (...)')")
                    } else {
                        String::new()
                    };
                    return Err(CompileError::at(
                        *pos,
                        format!("unknown macro '{name}'{hint}"),
                    ));
                }
                match self.compile_macro(name) {
                    Ok(node) => node,
                    Err(mut err) => {
                        // Errors inside the macro are reported for the macro itself.
                        err.pos = *pos;
                        if !err.message.starts_with("macro '") {
                            err.message =
                                format!("macro '{name}' has errors (reported with the macro)");
                        }
                        return Err(err);
                    }
                }
            }
            Expr::Check { field, op, rhs, .. } => self.check(field, *op, rhs)?,
        })
    }

    /// A defined list whose name is one or two edits from `text` (a misspelt list name).
    fn near_list_name(&self, text: &str) -> Option<&'d str> {
        if text.len() < 6 || !text.contains('_') {
            return None;
        }
        self.defs
            .lists
            .keys()
            .find(|name| edit_distance_at_most(name, text, 2))
            .map(String::as_str)
    }

    /// Expands a `(...)` list: list names are replaced by their items.
    fn expand_list(&self, items: &[Literal]) -> Result<Vec<String>, CompileError> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if !item.quoted {
                if let Some(values) = self.defs.lists.get(&item.text) {
                    out.extend(values.iter().cloned());
                    continue;
                }
                let near = self.near_list_name(&item.text);
                if near.is_some() || looks_like_list_name(&item.text) {
                    let hint = near.map_or(String::new(), |n| format!("; did you mean '{n}'?"));
                    return Err(CompileError::at(
                        item.pos,
                        format!(
                            "unknown list '{}' (quote it to use it as a literal value{hint})",
                            item.text
                        ),
                    ));
                }
            }
            out.push(item.text.clone());
        }
        Ok(out)
    }

    fn check(&mut self, field_ref: &FieldRef, op: Op, rhs: &Rhs) -> Result<Node, CompileError> {
        let field = Field::resolve(&field_ref.name, field_ref.arg.as_deref()).map_err(|e| {
            CompileError {
                unknown_field: matches!(e, FieldError::Unknown(_)),
                message: e.message(),
                pos: field_ref.pos,
            }
        })?;
        let (values, value_pos): (Vec<String>, usize) = match rhs {
            Rhs::None => (Vec::new(), field_ref.pos),
            Rhs::Value(l) => (vec![l.text.clone()], l.pos),
            Rhs::List(items) => (
                self.expand_list(items)?,
                items.first().map_or(field_ref.pos, |l| l.pos),
            ),
        };
        if matches!(op, Op::In | Op::Intersects | Op::PMatch) && values.is_empty() {
            return Ok(Node::False);
        }
        if field.kind == FieldKind::EvtDir {
            return self.direction(op, &values, value_pos);
        }
        let type_set = if field.kind == FieldKind::EvtType {
            self.type_set(op, &values)
        } else {
            None
        };
        let negate_all = op == Op::Ne && field.is_multi_valued();
        let op = if negate_all { Op::Eq } else { op };
        let operand = operand(&field, op, &values).map_err(|m| CompileError::at(value_pos, m))?;
        Ok(Node::Check(Box::new(Check {
            field,
            operand,
            type_set,
            negate_all,
        })))
    }

    /// node-agent sends one event per syscall with both its arguments and its result, so
    /// an event is both the enter (`>`) and the exit (`<`) of Falco's model.
    fn direction(&self, op: Op, values: &[String], pos: usize) -> Result<Node, CompileError> {
        let is_dir = |v: &str| v == "<" || v == ">";
        let any = values.iter().any(|v| is_dir(v));
        Ok(match op {
            Op::Eq | Op::In | Op::Intersects => {
                if any {
                    Node::True
                } else {
                    Node::False
                }
            }
            Op::Ne => {
                if any {
                    Node::False
                } else {
                    Node::True
                }
            }
            Op::Exists => Node::True,
            other => {
                return Err(CompileError::at(
                    pos,
                    format!("operator '{other}' is not supported for evt.dir (use = < or = >)"),
                ));
            }
        })
    }

    fn type_set(&mut self, op: Op, values: &[String]) -> Option<EventTypeSet> {
        let set_of = |this: &mut Self| {
            let mut set = EventTypeSet::EMPTY;
            for v in values {
                match EventType::from_name(v) {
                    Some(t) => set = set.with(t),
                    None => this.warnings.push(format!(
                        "evt.type '{v}' is not captured by node-agent; that part never matches"
                    )),
                }
            }
            set
        };
        match op {
            Op::Eq | Op::In | Op::Intersects => Some(set_of(self)),
            Op::Ne => Some(set_of(self).complement()),
            _ => None,
        }
    }
}

/// Levenshtein distance of `a` and `b` is at most `max` (bytes; names are ASCII).
fn edit_distance_at_most(a: &str, b: &str, max: usize) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > max {
        return false;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            row[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1);
        }
        if row.iter().min().is_some_and(|m| *m > max) {
            return false;
        }
        prev = row;
    }
    prev.last().is_some_and(|d| *d <= max)
}

fn single(values: &[String], op: Op) -> Result<&str, String> {
    match values {
        [v] => Ok(v),
        _ => Err(format!("'{op}' takes one value")),
    }
}

fn parse_int(text: &str, field: &Field) -> Result<i64, String> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| format!("'{text}' is not a number (field {} is numeric)", field.name))
}

fn parse_bool(text: &str, field: &Field) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "'{text}' is not true or false (field {} is boolean)",
            field.name
        )),
    }
}

fn parse_net(text: &str, field: &Field) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(match net.addr() {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => net,
            _ => net.trunc(),
        });
    }
    text.parse::<IpAddr>()
        .map(|ip| IpNet::from(canonical(ip)))
        .map_err(|_| {
            format!(
                "'{text}' is not an IP address or CIDR network (field {})",
                field.name
            )
        })
}

fn glob(
    pattern: &str,
    case_insensitive: bool,
    literal_separator: bool,
) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(literal_separator)
        .case_insensitive(case_insensitive)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid glob '{pattern}': {e}"))
}

fn operand(field: &Field, op: Op, values: &[String]) -> Result<Operand, String> {
    let ty = field.field_type();
    let unsupported = || {
        let kind = match ty {
            FieldType::Int => "numeric",
            FieldType::Bool => "boolean",
            FieldType::Ip => "IP address",
            FieldType::Net => "network",
            FieldType::Flags => "flags",
            FieldType::Enum => "enumerated",
            FieldType::Str => "string",
        };
        format!(
            "operator '{op}' is not supported for {kind} field {}",
            field.name
        )
    };
    if op == Op::Exists {
        return Ok(Operand::Exists);
    }
    match ty {
        FieldType::Int => match op {
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                Ok(Operand::IntCmp(op, parse_int(single(values, op)?, field)?))
            }
            Op::In | Op::Intersects => Ok(Operand::IntIn(
                values
                    .iter()
                    .map(|v| parse_int(v, field))
                    .collect::<Result<_, _>>()?,
            )),
            _ => Err(unsupported()),
        },
        FieldType::Bool => match op {
            Op::Eq | Op::Ne => Ok(Operand::BoolIn(
                Box::new([parse_bool(single(values, op)?, field)?]),
                op == Op::Ne,
            )),
            Op::In | Op::Intersects => Ok(Operand::BoolIn(
                values
                    .iter()
                    .map(|v| parse_bool(v, field))
                    .collect::<Result<_, _>>()?,
                false,
            )),
            _ => Err(unsupported()),
        },
        FieldType::Ip | FieldType::Net => match op {
            Op::Eq | Op::Ne => Ok(Operand::NetIn(
                Box::new([parse_net(single(values, op)?, field)?]),
                op == Op::Ne,
            )),
            Op::In | Op::Intersects => Ok(Operand::NetIn(
                values
                    .iter()
                    .map(|v| parse_net(v, field))
                    .collect::<Result<_, _>>()?,
                false,
            )),
            Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::PMatch => Err(unsupported()),
            _ => string_operand(field, op, values),
        },
        FieldType::Flags => {
            let value = values.first().map(String::as_str).unwrap_or_default();
            match op {
                Op::Contains | Op::IContains if values.len() == 1 => {
                    let name = if op == Op::IContains {
                        value.to_ascii_uppercase()
                    } else {
                        value.to_string()
                    };
                    if let Some(test) = names::open_flag_bits(&name) {
                        return Ok(Operand::Flag(FlagTest::Open(test)));
                    }
                    for kind in [FlagKind::Mount, FlagKind::Clone] {
                        let table = match kind {
                            FlagKind::Mount => &names::MOUNT_FLAGS,
                            _ => &names::CLONE_FLAGS,
                        };
                        if let Some(bit) = table.bit(&name) {
                            return Ok(Operand::Flag(FlagTest::Bits(kind, bit)));
                        }
                    }
                    string_operand(field, op, values)
                }
                Op::Eq | Op::Ne if value.trim().parse::<u64>().is_ok() => Ok(Operand::FlagsRaw(
                    value.trim().parse::<u64>().unwrap_or_default(),
                    op == Op::Ne,
                )),
                Op::Lt | Op::Le | Op::Gt | Op::Ge => Err(unsupported()),
                _ => string_operand(field, op, values),
            }
        }
        FieldType::Enum => match op {
            Op::Eq | Op::Ne | Op::In | Op::Intersects => {
                if matches!(op, Op::Eq | Op::Ne) {
                    single(values, op)?;
                }
                let keys = values
                    .iter()
                    .map(|v| match v.trim().parse::<i64>() {
                        Ok(raw) => EnumKey::Raw(raw),
                        Err(_) => EnumKey::Name(Box::from(v.as_str())),
                    })
                    .collect();
                Ok(Operand::EnumIn(keys, op == Op::Ne))
            }
            Op::Lt | Op::Le | Op::Gt | Op::Ge => Err(unsupported()),
            _ => string_operand(field, op, values),
        },
        FieldType::Str => string_operand(field, op, values),
    }
}

fn string_operand(field: &Field, op: Op, values: &[String]) -> Result<Operand, String> {
    Ok(match op {
        Op::Eq => Operand::StrEq(Box::from(single(values, op)?)),
        Op::Ne => Operand::StrNe(Box::from(single(values, op)?)),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            if field.field_type() == FieldType::Str {
                return Err(format!(
                    "operator '{op}' is not supported for string field {} (numeric fields only)",
                    field.name
                ));
            }
            Operand::StrLess(op, Box::from(single(values, op)?))
        }
        Op::Contains => Operand::Contains(Finder::new(single(values, op)?.as_bytes()).into_owned()),
        Op::IContains => Operand::IContains(
            single(values, op)?
                .to_ascii_lowercase()
                .into_bytes()
                .into_boxed_slice(),
        ),
        Op::BContains | Op::BStartsWith => {
            let hex = single(values, op)?;
            let bytes = decode_hex(hex).ok_or_else(|| {
                format!("'{op}' takes hexadecimal bytes (like CAFEBABE), found '{hex}'")
            })?;
            if op == Op::BContains {
                Operand::Contains(Finder::new(&bytes).into_owned())
            } else {
                Operand::BStartsWith(bytes.into_boxed_slice())
            }
        }
        Op::StartsWith => Operand::StartsWith(Box::from(single(values, op)?)),
        Op::EndsWith => Operand::EndsWith(Box::from(single(values, op)?)),
        Op::Glob | Op::IGlob => Operand::Glob(glob(single(values, op)?, op == Op::IGlob, false)?),
        Op::Regex => {
            let pattern = single(values, op)?;
            let regex = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("invalid regex '{pattern}': {e}"))?;
            Operand::Regex(regex)
        }
        Op::PMatch => {
            let mut prefixes = Vec::with_capacity(values.len());
            for v in values {
                let mut components = Vec::new();
                for part in v.split('/').filter(|c| !c.is_empty()) {
                    components.push(if part.contains(['*', '?', '[']) {
                        PathComponent::Glob(glob(part, false, true)?)
                    } else {
                        PathComponent::Literal(Box::from(part))
                    });
                }
                prefixes.push(components.into_boxed_slice());
            }
            Operand::PMatch(prefixes.into_boxed_slice())
        }
        Op::In | Op::Intersects => Operand::StrIn(StrSet::new(values.to_vec())),
        Op::Exists => Operand::Exists,
    })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_name_heuristic() {
        assert!(looks_like_list_name("shell_binaries"));
        assert!(looks_like_list_name("known_drop_and_execute_containers"));
        assert!(!looks_like_list_name("update_engine"));
        assert!(!looks_like_list_name("bash"));
        assert!(!looks_like_list_name("10_etc_sudoers."));
        assert!(edit_distance_at_most("shell_binaries", "shell_binarys", 2));
        assert!(edit_distance_at_most("abc", "abc", 0));
        assert!(!edit_distance_at_most("shell_binaries", "mail_binaries", 2));
        assert!(!edit_distance_at_most("a", "abcd", 2));
    }

    #[test]
    fn hex_and_icontains_and_pmatch() {
        assert_eq!(decode_hex("CAFEbabe"), Some(vec![0xca, 0xfe, 0xba, 0xbe]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert!(icontains(b"CAP_SYS_MODULE CAP_X", b"sys_module"));
        assert!(!icontains(b"abc", b"abcd"));
        let prefixes: Box<[Box<[PathComponent]>]> = Box::new([
            Box::new([
                PathComponent::Literal("tmp".into()),
                PathComponent::Literal("hello".into()),
            ]),
            Box::new([
                PathComponent::Literal("var".into()),
                PathComponent::Glob(glob("*.txt", false, true).unwrap()),
            ]),
        ]);
        assert!(pmatch("/tmp/hello", &prefixes));
        assert!(pmatch("/tmp/hello/world", &prefixes));
        assert!(!pmatch("/tmp/hello_world", &prefixes));
        assert!(pmatch("/var/a.txt/b", &prefixes));
        assert!(!pmatch("/var/x/a.txt", &prefixes));
        assert!(!pmatch("/tmp", &prefixes));
    }
}
