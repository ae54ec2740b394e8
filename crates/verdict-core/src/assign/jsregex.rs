//! JavaScript regular expressions on a linear-time engine.
//!
//! GrowthBook evaluates `$regex` as `new RegExp(pattern)` and `$regexi` as
//! `new RegExp(pattern, "i")`: ECMAScript syntax with the web-compatibility grammar
//! (Annex B), no `u` flag. A backtracking engine makes `^(a+)+$` take seconds per
//! request, so [`JsRegex`] translates the pattern into the `regex` crate's syntax, which
//! matches in time linear in the input, keeping JavaScript's meaning:
//!
//! - Without the `u` flag JavaScript matches UTF-16 code units. Every pattern atom is
//!   therefore a set of code units, and an astral character in the input is matched as
//!   its two surrogates, each mapped to a private code point (`U+F0000 + unit - 0xD800`,
//!   a range no input can contain once its astral characters are split). So `^.$` does
//!   not match "😀", as in JavaScript.
//! - `\d` is `[0-9]`, `\w` `[A-Za-z0-9_]`, `\b` the ASCII word boundary, `\s` the
//!   ECMAScript white space and line terminators, `.` anything but `\n \r \u2028 \u2029`.
//! - `i` uses JavaScript's canonicalisation (a code unit's single-character upper case,
//!   never mapping non-ASCII to ASCII), expanded into explicit sets here: the engine's
//!   own case folding would also match `ſ` for `s` and the Kelvin sign for `k`.
//!
//! Backreferences and lookaround need backtracking and are refused
//! ([`JsRegexError::Backtracking`]); so are legacy octal escapes that look like them.
//! GrowthBook's escaping of unescaped `/` is skipped: `\/` and `/` mean the same in
//! every position, so it never changes a pattern.

mod translate;
mod units;

use regex::{Regex, RegexBuilder};
use std::borrow::Cow;
use translate::Translator;
use units::map_unit;

/// Compiled-program size limit for one pattern, in bytes; a larger pattern is refused
/// rather than compiled ([`JsRegexError::TooLarge`]).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Lazy-DFA cache limit for one pattern, in bytes (the engine falls back to slower
/// linear-time matching when it is full, never to more memory).
pub const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;

/// Why a pattern cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsRegexError {
    /// JavaScript itself would throw a `SyntaxError`.
    #[error("is not a valid JavaScript regular expression: {0}")]
    Syntax(String),
    /// The pattern uses a feature only a backtracking engine can run.
    #[error("uses {0}, which needs a backtracking engine; verdict matches regexes in linear time and refuses it")]
    Backtracking(&'static str),
    /// The compiled pattern would exceed [`REGEX_SIZE_LIMIT`].
    #[error("is too large to compile (limit {REGEX_SIZE_LIMIT} bytes of program)")]
    TooLarge,
}

/// A JavaScript regular expression compiled for linear-time matching.
#[derive(Debug, Clone)]
pub struct JsRegex {
    re: Regex,
    nested_repetition: bool,
}

impl JsRegex {
    /// Compiles `pattern` as `new RegExp(pattern, insensitive ? "i" : "")` would.
    pub fn new(pattern: &str, insensitive: bool) -> Result<Self, JsRegexError> {
        let mut t = Translator::new(pattern, insensitive);
        t.run()?;
        let re = RegexBuilder::new(t.output())
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => JsRegexError::TooLarge,
                other => JsRegexError::Syntax(other.to_string()),
            })?;
        Ok(Self {
            re,
            nested_repetition: t.nested_repetition(),
        })
    }

    /// `RegExp.prototype.test`: whether the pattern matches anywhere in `haystack`.
    pub fn is_match(&self, haystack: &str) -> bool {
        self.re.is_match(&code_units(haystack))
    }

    /// Whether a repeated group contains an unbounded repetition (`(a+)+`, star height
    /// 2, as `safe-regex` measures it). Harmless here, catastrophic in the backtracking
    /// engines of GrowthBook's SDKs, so experiment validation refuses it.
    pub fn nests_unbounded_repetition(&self) -> bool {
        self.nested_repetition
    }
}

/// The input as code units: astral characters become their two mapped surrogates.
fn code_units(s: &str) -> Cow<'_, str> {
    // A 4-byte UTF-8 sequence (lead byte >= 0xF0) is the only astral encoding.
    if s.bytes().all(|b| b < 0xF0) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    let mut buf = [0u16; 2];
    for c in s.chars() {
        for &u in c.encode_utf16(&mut buf).iter() {
            // map_unit yields a BMP scalar or a private-use code point, never a surrogate.
            out.extend(char::from_u32(map_unit(u)));
        }
    }
    Cow::Owned(out)
}
