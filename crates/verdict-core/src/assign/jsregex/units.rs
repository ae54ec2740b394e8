//! Sets of UTF-16 code units, the character classes JavaScript defines over them, and
//! the `i` flag's canonicalisation.

use std::collections::HashMap;

/// The private code point standing for a surrogate code unit (see [`super`]).
pub(super) fn map_unit(u: u16) -> u32 {
    if (0xD800..=0xDFFF).contains(&u) {
        0xF0000 + u32::from(u - 0xD800)
    } else {
        u32::from(u)
    }
}

/// A set of UTF-16 code units as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct UnitSet(pub(super) Vec<(u16, u16)>);

impl UnitSet {
    pub(super) fn of(ranges: &[(u16, u16)]) -> Self {
        let mut s = UnitSet(ranges.to_vec());
        s.normalize();
        s
    }

    pub(super) fn add(&mut self, lo: u16, hi: u16) {
        self.0.push((lo, hi));
    }

    pub(super) fn union(&mut self, other: &UnitSet) {
        self.0.extend_from_slice(&other.0);
    }

    pub(super) fn normalize(&mut self) {
        self.0.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(self.0.len());
        for &(lo, hi) in &self.0 {
            match out.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        self.0 = out;
    }

    pub(super) fn complement(&self) -> UnitSet {
        let mut out = Vec::new();
        let mut next: u32 = 0;
        for &(lo, hi) in &self.0 {
            if u32::from(lo) > next {
                out.push((next as u16, lo - 1));
            }
            next = u32::from(hi) + 1;
        }
        if next <= 0xFFFF {
            out.push((next as u16, 0xFFFF));
        }
        UnitSet(out)
    }

    pub(super) fn contains(&self, u: u16) -> bool {
        self.0
            .binary_search_by(|&(lo, hi)| {
                if hi < u {
                    std::cmp::Ordering::Less
                } else if lo > u {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }
}

pub(super) const DIGITS: &[(u16, u16)] = &[(0x30, 0x39)];
pub(super) const WORD: &[(u16, u16)] = &[(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)];
/// ECMAScript `WhiteSpace` and `LineTerminator`.
pub(super) const SPACE: &[(u16, u16)] = &[
    (0x09, 0x0D),
    (0x20, 0x20),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
];
pub(super) const LINE_TERMINATORS: &[(u16, u16)] = &[(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)];

/// JavaScript's `Canonicalize` without the `u` flag.
pub(super) fn canonicalize(u: u16) -> u16 {
    let Some(c) = char::from_u32(u32::from(u)) else {
        return u; // a surrogate has no case
    };
    let mut upper = c.to_uppercase();
    let (Some(x), None) = (upper.next(), upper.next()) else {
        return u; // no single-character upper case (e.g. ß -> SS)
    };
    match u16::try_from(u32::from(x)) {
        Ok(x) if !(u >= 128 && x < 128) => x,
        _ => u,
    }
}

/// The classes of code units JavaScript's `i` flag identifies (only those with more
/// than one member).
pub(super) fn case_classes() -> Vec<Vec<u16>> {
    let mut by_canon: HashMap<u16, Vec<u16>> = HashMap::new();
    for u in 0..=0xFFFFu16 {
        let c = canonicalize(u);
        if c != u {
            by_canon.entry(c).or_default().push(u);
        }
    }
    by_canon
        .into_iter()
        .map(|(c, mut members)| {
            if canonicalize(c) == c {
                members.push(c);
            }
            members
        })
        .filter(|m| m.len() > 1)
        .collect()
}
