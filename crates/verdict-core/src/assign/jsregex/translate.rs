//! The translation of a JavaScript pattern (no `u` flag, Annex B grammar) into the
//! `regex` crate's syntax, one token at a time, with every atom a set of code units.

use super::units::{case_classes, map_unit, UnitSet, DIGITS, LINE_TERMINATORS, SPACE, WORD};
use super::JsRegexError;

/// One parsed class atom: a single code unit (may start a range) or a set (`\d`).
enum ClassAtom {
    Unit(u16),
    Set(UnitSet),
}

/// What the last term was, for quantifiers.
#[derive(Clone, Copy)]
enum Last {
    /// Nothing to repeat (start, `(`, `|`, an assertion or a quantifier).
    None,
    /// A single-unit atom or set.
    Atom,
    /// A group; `true` when it contains an unbounded repetition.
    Group(bool),
}

pub(super) struct Translator {
    units: Vec<u16>,
    pos: usize,
    out: String,
    insensitive: bool,
    case_classes: Vec<Vec<u16>>,
    capturing_groups: usize,
    named_groups: bool,
    /// Per open group: whether it contains an unbounded repetition.
    open: Vec<bool>,
    last: Last,
    nested: bool,
}

fn syntax(msg: &str) -> JsRegexError {
    JsRegexError::Syntax(msg.to_owned())
}

impl Translator {
    pub(super) fn new(pattern: &str, insensitive: bool) -> Self {
        let units: Vec<u16> = pattern.encode_utf16().collect();
        let (capturing_groups, named_groups) = count_groups(&units);
        Self {
            units,
            pos: 0,
            out: String::with_capacity(pattern.len() * 2),
            insensitive,
            case_classes: if insensitive {
                case_classes()
            } else {
                Vec::new()
            },
            capturing_groups,
            named_groups,
            open: Vec::new(),
            last: Last::None,
            nested: false,
        }
    }

    fn peek(&self, ahead: usize) -> Option<u16> {
        self.units.get(self.pos + ahead).copied()
    }

    fn is(&self, ahead: usize, c: u8) -> bool {
        self.peek(ahead) == Some(u16::from(c))
    }

    /// The translated pattern.
    pub(super) fn output(&self) -> &str {
        &self.out
    }

    /// Whether a repeated group contains an unbounded repetition.
    pub(super) fn nested_repetition(&self) -> bool {
        self.nested
    }

    pub(super) fn run(&mut self) -> Result<(), JsRegexError> {
        while let Some(c) = self.peek(0) {
            match u8::try_from(c).map(char::from).unwrap_or('\u{80}') {
                '|' => {
                    self.pos += 1;
                    self.out.push('|');
                    self.last = Last::None;
                }
                '(' => self.open_group()?,
                ')' => {
                    self.pos += 1;
                    let inner = self.open.pop().ok_or_else(|| syntax("unmatched ')'"))?;
                    if inner {
                        if let Some(parent) = self.open.last_mut() {
                            *parent = true;
                        }
                    }
                    self.out.push(')');
                    self.last = Last::Group(inner);
                }
                '^' | '$' => {
                    self.pos += 1;
                    self.out.push(char::from(c as u8));
                    self.last = Last::None;
                }
                '*' => self.quantifier(1, 0, None)?,
                '+' => self.quantifier(1, 1, None)?,
                '?' => self.quantifier(1, 0, Some(1))?,
                '{' => match self.braced_quantifier() {
                    Some((len, min, max)) => self.quantifier(len, min, max)?,
                    None => self.literal(c),
                },
                '.' => {
                    self.pos += 1;
                    let set = UnitSet::of(LINE_TERMINATORS).complement();
                    self.emit_set(set, false);
                }
                '[' => self.class()?,
                '\\' => self.atom_escape()?,
                _ => self.literal(c),
            }
        }
        if !self.open.is_empty() {
            return Err(syntax("unterminated group"));
        }
        Ok(())
    }

    fn literal(&mut self, u: u16) {
        self.pos += 1;
        self.emit_set(UnitSet::of(&[(u, u)]), false);
    }

    fn open_group(&mut self) -> Result<(), JsRegexError> {
        self.pos += 1;
        if self.is(0, b'?') {
            match self.peek(1).map(|c| c as u8) {
                Some(b':') => self.pos += 2,
                Some(b'=') | Some(b'!') => return Err(JsRegexError::Backtracking("a lookahead")),
                Some(b'<') if self.is(2, b'=') || self.is(2, b'!') => {
                    return Err(JsRegexError::Backtracking("a lookbehind"))
                }
                Some(b'<') => {
                    self.pos += 2;
                    let start = self.pos;
                    while self.peek(0).is_some_and(|c| c != u16::from(b'>')) {
                        self.pos += 1;
                    }
                    let name = &self.units[start..self.pos];
                    let ident = |c: u16, first: bool| {
                        c < 128
                            && (c as u8 == b'_'
                                || c as u8 == b'$'
                                || (c as u8).is_ascii_alphabetic()
                                || (!first && (c as u8).is_ascii_digit()))
                    };
                    let valid =
                        !name.is_empty() && name.iter().enumerate().all(|(i, &c)| ident(c, i == 0));
                    if !valid || self.peek(0).is_none() {
                        return Err(syntax("invalid capture group name"));
                    }
                    self.pos += 1;
                }
                _ => return Err(syntax("invalid group")),
            }
        }
        // Captures are never read (`test` only), so every group is non-capturing.
        self.out.push_str("(?:");
        self.open.push(false);
        self.last = Last::None;
        Ok(())
    }

    /// `{n}`, `{n,}` or `{n,m}` at the current position: (length, min, max).
    fn braced_quantifier(&self) -> Option<(usize, u32, Option<u32>)> {
        let mut i = 1;
        let number = |i: &mut usize| -> Option<u32> {
            let start = *i;
            let mut v: u32 = 0;
            while let Some(d) = self.peek(*i).filter(|d| (0x30..=0x39).contains(d)) {
                // Saturate: the engine's size limit refuses huge counts anyway.
                v = v.saturating_mul(10).saturating_add(u32::from(d - 0x30));
                *i += 1;
            }
            (*i > start).then_some(v)
        };
        let min = number(&mut i)?;
        let max = if self.is(i, b',') {
            i += 1;
            if self.is(i, b'}') {
                None
            } else {
                Some(number(&mut i)?)
            }
        } else {
            Some(min)
        };
        self.is(i, b'}').then_some((i + 1, min, max))
    }

    fn quantifier(&mut self, len: usize, min: u32, max: Option<u32>) -> Result<(), JsRegexError> {
        let group_unbounded = match self.last {
            Last::None => return Err(syntax("nothing to repeat")),
            Last::Atom => false,
            Last::Group(inner) => inner,
        };
        if max.is_some_and(|m| m < min) {
            return Err(syntax("numbers out of order in {} quantifier"));
        }
        self.pos += len;
        let repeats = max.is_none_or(|m| m > 1);
        if group_unbounded && repeats {
            self.nested = true;
        }
        if max.is_none() {
            if let Some(g) = self.open.last_mut() {
                *g = true;
            }
        }
        match (min, max) {
            (0, None) => self.out.push('*'),
            (1, None) => self.out.push('+'),
            (0, Some(1)) => self.out.push('?'),
            (n, None) => self.out.push_str(&format!("{{{n},}}")),
            (n, Some(m)) if n == m => self.out.push_str(&format!("{{{n}}}")),
            (n, Some(m)) => self.out.push_str(&format!("{{{n},{m}}}")),
        }
        if self.is(0, b'?') {
            self.pos += 1;
            self.out.push('?');
        }
        self.last = Last::None;
        Ok(())
    }

    fn atom_escape(&mut self) -> Result<(), JsRegexError> {
        let Some(c) = self.peek(1) else {
            return Err(syntax("\\ at end of pattern"));
        };
        match c as u8 {
            _ if c >= 128 => self.escaped_unit(c, 2),
            b'b' | b'B' => {
                self.pos += 2;
                // JavaScript's \b is ASCII-only even with the `i` flag (no `u`).
                self.out.push_str(if c == u16::from(b'b') {
                    r"(?-u:\b)"
                } else {
                    r"(?-u:\B)"
                });
                self.last = Last::None;
            }
            b'1'..=b'9' => {
                let mut i = 1;
                let mut n: usize = 0;
                while let Some(d) = self.peek(i).filter(|d| (0x30..=0x39).contains(d)) {
                    n = n.saturating_mul(10).saturating_add(usize::from(d - 0x30));
                    i += 1;
                }
                if n <= self.capturing_groups {
                    return Err(JsRegexError::Backtracking("a backreference"));
                }
                // Annex B: no such group, so an octal escape (or `\8`, `\9` = "8", "9").
                let unit = self.legacy_octal();
                self.emit_set(UnitSet::of(&[(unit, unit)]), false);
            }
            b'k' if self.named_groups => {
                return Err(JsRegexError::Backtracking("a named backreference"))
            }
            _ => match self.char_escape(false)? {
                ClassAtom::Unit(u) => self.emit_set(UnitSet::of(&[(u, u)]), false),
                ClassAtom::Set(s) => self.emit_set(s, false),
            },
        }
        Ok(())
    }

    fn escaped_unit(&mut self, u: u16, len: usize) {
        self.pos += len;
        self.emit_set(UnitSet::of(&[(u, u)]), false);
    }

    /// After a backslash at `self.pos`: `\0`, legacy octal, `\8`/`\9` (identity).
    /// Leaves `pos` after the escape.
    fn legacy_octal(&mut self) -> u16 {
        self.pos += 1; // the backslash
        let first = self.peek(0).unwrap_or(0);
        if !(0x30..=0x37).contains(&first) {
            self.pos += 1;
            return first; // \8, \9
        }
        let max_digits = if first <= 0x33 { 3 } else { 2 };
        let mut v: u16 = 0;
        let mut n = 0;
        while n < max_digits {
            match self.peek(0).filter(|d| (0x30..=0x37).contains(d)) {
                Some(d) => {
                    v = v * 8 + (d - 0x30);
                    self.pos += 1;
                    n += 1;
                }
                None => break,
            }
        }
        v
    }

    /// A character or character-class escape at `self.pos` (the backslash), shared by
    /// atoms and classes. Leaves `pos` after it.
    fn char_escape(&mut self, in_class: bool) -> Result<ClassAtom, JsRegexError> {
        let c = self.peek(1).ok_or_else(|| syntax("\\ at end of pattern"))?;
        let hex = |t: &Self, at: usize, n: usize| -> Option<u16> {
            let mut v: u16 = 0;
            for k in 0..n {
                let d = char::from_u32(u32::from(t.peek(at + k)?))?.to_digit(16)?;
                v = v * 16 + d as u16;
            }
            Some(v)
        };
        let set = |s: &[(u16, u16)]| ClassAtom::Set(UnitSet::of(s));
        let unit = |u: u16| ClassAtom::Unit(u);
        // Non-ASCII maps to 0xFF, which only the identity escape arm matches.
        let (atom, len) = match u8::try_from(c).ok().filter(u8::is_ascii).unwrap_or(0xFF) {
            b'd' => (set(DIGITS), 2),
            b'D' => (ClassAtom::Set(UnitSet::of(DIGITS).complement()), 2),
            b'w' => (set(WORD), 2),
            b'W' => (ClassAtom::Set(UnitSet::of(WORD).complement()), 2),
            b's' => (set(SPACE), 2),
            b'S' => (ClassAtom::Set(UnitSet::of(SPACE).complement()), 2),
            b'f' => (unit(0x0C), 2),
            b'n' => (unit(0x0A), 2),
            b'r' => (unit(0x0D), 2),
            b't' => (unit(0x09), 2),
            b'v' => (unit(0x0B), 2),
            b'b' if in_class => (unit(0x08), 2),
            b'0'..=b'9' if in_class => {
                let u = self.legacy_octal();
                return Ok(ClassAtom::Unit(u));
            }
            b'0' if !self.peek(2).is_some_and(|d| (0x30..=0x39).contains(&d)) => (unit(0), 2),
            b'0' => {
                let u = self.legacy_octal();
                return Ok(ClassAtom::Unit(u));
            }
            b'c' => {
                let letter = self.peek(2).filter(|&l| {
                    l < 128
                        && ((l as u8).is_ascii_alphabetic()
                            || (in_class && ((l as u8).is_ascii_digit() || l == 0x5F)))
                });
                match letter {
                    Some(l) => (unit(l % 32), 3),
                    // Annex B: `\c` without a control letter is a literal backslash.
                    None => (unit(u16::from(b'\\')), 1),
                }
            }
            b'x' => match hex(self, 2, 2) {
                Some(v) => (unit(v), 4),
                None => (unit(c), 2),
            },
            b'u' => match hex(self, 2, 4) {
                Some(v) => (unit(v), 6),
                None => (unit(c), 2),
            },
            _ => (unit(c), 2), // identity escape
        };
        self.pos += len;
        Ok(atom)
    }

    fn class(&mut self) -> Result<(), JsRegexError> {
        self.pos += 1;
        let negated = self.is(0, b'^');
        if negated {
            self.pos += 1;
        }
        let mut set = UnitSet::default();
        loop {
            let Some(c) = self.peek(0) else {
                return Err(syntax("unterminated character class"));
            };
            if c == u16::from(b']') {
                self.pos += 1;
                break;
            }
            let a = self.class_atom()?;
            let range = self.is(0, b'-') && self.peek(1).is_some_and(|n| n != u16::from(b']'));
            if !range {
                add_atom(&mut set, a);
                continue;
            }
            self.pos += 1;
            let b = self.class_atom()?;
            match (a, b) {
                (ClassAtom::Unit(lo), ClassAtom::Unit(hi)) => {
                    if lo > hi {
                        return Err(syntax("range out of order in character class"));
                    }
                    set.add(lo, hi);
                }
                // Annex B: a range with a class escape at either end is a union with '-'.
                (a, b) => {
                    add_atom(&mut set, a);
                    set.add(0x2D, 0x2D);
                    add_atom(&mut set, b);
                }
            }
        }
        set.normalize();
        self.emit_set(set, negated);
        Ok(())
    }

    fn class_atom(&mut self) -> Result<ClassAtom, JsRegexError> {
        let c = self
            .peek(0)
            .ok_or_else(|| syntax("unterminated character class"))?;
        if c != u16::from(b'\\') {
            self.pos += 1;
            return Ok(ClassAtom::Unit(c));
        }
        if self.is(1, b'k') && self.named_groups {
            return Err(syntax("invalid escape \\k in character class"));
        }
        if self.is(1, b'k') || self.is(1, b'B') {
            // Identity escapes in a class without the `u` flag.
            self.pos += 2;
            return Ok(ClassAtom::Unit(self.units[self.pos - 1]));
        }
        self.char_escape(true)
    }

    /// Emits a set of code units as the engine's syntax, applying the `i` flag's
    /// canonicalisation and then the class's negation (the order JavaScript uses).
    fn emit_set(&mut self, mut set: UnitSet, negated: bool) {
        if self.insensitive {
            let mut extra = UnitSet::default();
            for class in &self.case_classes {
                if class.iter().any(|&u| set.contains(u)) {
                    for &u in class {
                        extra.add(u, u);
                    }
                }
            }
            set.union(&extra);
            set.normalize();
        }
        if negated {
            set = set.complement();
        }
        self.last = Last::Atom;
        let push = |out: &mut String, u: u32| out.push_str(&format!("\\x{{{u:X}}}"));
        match set.0.as_slice() {
            [] => self.out.push_str(r"[^\x{0}-\x{10FFFF}]"),
            [(lo, hi)] if lo == hi => push(&mut self.out, map_unit(*lo)),
            ranges => {
                self.out.push('[');
                for &(lo, hi) in ranges {
                    // Split at the surrogates, which map to a private range.
                    for (a, b) in [
                        (lo, hi.min(0xD7FF)),
                        (lo.max(0xD800), hi.min(0xDFFF)),
                        (lo.max(0xE000), hi),
                    ] {
                        if a <= b {
                            push(&mut self.out, map_unit(a));
                            self.out.push('-');
                            push(&mut self.out, map_unit(b));
                        }
                    }
                }
                self.out.push(']');
            }
        }
    }
}

fn add_atom(set: &mut UnitSet, a: ClassAtom) {
    match a {
        ClassAtom::Unit(u) => set.add(u, u),
        ClassAtom::Set(s) => set.union(&s),
    }
}

/// Counts capturing groups (`(` not followed by `?`, and `(?<name>`) outside classes,
/// to tell a backreference from an octal escape; also whether any group is named.
fn count_groups(units: &[u16]) -> (usize, bool) {
    let (mut count, mut named, mut i, mut in_class) = (0, false, 0, false);
    let at = |i: usize, c: u8| units.get(i) == Some(&u16::from(c));
    while i < units.len() {
        if at(i, b'\\') {
            i += 2;
            continue;
        }
        if in_class {
            in_class = !at(i, b']');
        } else if at(i, b'[') {
            in_class = true;
        } else if at(i, b'(') {
            if !at(i + 1, b'?') {
                count += 1;
            } else if at(i + 2, b'<') && !at(i + 3, b'=') && !at(i + 3, b'!') {
                count += 1;
                named = true;
            }
        }
        i += 1;
    }
    (count, named)
}
