//! JavaScript value semantics over `serde_json::Value`.
//!
//! GrowthBook's reference SDK is JavaScript, and its targeting rules inherit JavaScript's
//! coercions (`value + ""`, `value * 1`, truthiness, `<` on mixed types, `JSON.stringify`
//! equality). Bucket-for-bucket compatibility means reproducing them exactly, so they
//! live here, in one place, named after the ECMAScript operations they mirror.

use serde_json::{Map, Value};
use std::cmp::Ordering;

/// `Number.prototype.toString()` for a double (`1` -> "1", `1e21` -> "1e+21").
pub fn number_to_string(n: f64) -> String {
    if n == 0.0 {
        // JS prints -0 as "0".
        return "0".to_owned();
    }
    let mut buf = ryu_js::Buffer::new();
    buf.format(n).to_owned()
}

/// The JSON number as JavaScript sees it: always a double.
pub fn as_f64(n: &serde_json::Number) -> f64 {
    n.as_f64().unwrap_or(f64::NAN)
}

/// `String(value)` / `value + ""` (ECMAScript ToString after ToPrimitive).
pub fn to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_to_string(as_f64(n)),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                // Array.prototype.join renders null and undefined as "".
                Value::Null => String::new(),
                other => to_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// ECMAScript ToBoolean ("truthiness").
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => {
            let f = as_f64(n);
            f != 0.0 && !f.is_nan()
        }
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// ECMAScript ToNumber (`value * 1`); `NaN` where JavaScript gives `NaN`.
pub fn to_number(v: &Value) -> f64 {
    match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => as_f64(n),
        Value::String(s) => string_to_number(s),
        // ToPrimitive of an array is its join; of an object "[object Object]".
        Value::Array(_) => string_to_number(&to_string(v)),
        Value::Object(_) => f64::NAN,
    }
}

fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{a}' | '\u{b}' | '\u{c}' | '\u{d}' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// ECMAScript StringToNumber: trims whitespace, "" is 0, accepts decimal literals,
/// `Infinity`, and `0x`/`0o`/`0b` integers; anything else is `NaN`.
pub fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(is_js_whitespace);
    if t.is_empty() {
        return 0.0;
    }
    for (prefix, radix) in [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ] {
        if let Some(digits) = t.strip_prefix(prefix) {
            if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                return f64::NAN;
            }
            return digits.chars().fold(0.0, |acc, c| {
                acc * f64::from(radix) + f64::from(c.to_digit(radix).unwrap_or(0))
            });
        }
    }
    let (sign, body) = match t.as_bytes()[0] {
        b'+' => (1.0, &t[1..]),
        b'-' => (-1.0, &t[1..]),
        _ => (1.0, t),
    };
    if body == "Infinity" {
        return sign * f64::INFINITY;
    }
    if !is_decimal_literal(body) {
        return f64::NAN;
    }
    body.parse::<f64>().map(|f| sign * f).unwrap_or(f64::NAN)
}

/// StrUnsignedDecimalLiteral: digits [. digits] | . digits, then an optional exponent.
/// Rust's float parser also takes "inf" and "nan", which JavaScript does not.
fn is_decimal_literal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

/// Compares two strings as JavaScript does: by UTF-16 code units.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    // UTF-8 byte order is code point order, which agrees with UTF-16 order unless a
    // string holds an astral character (a 4-byte sequence, lead byte >= 0xF0).
    let astral = |s: &str| s.bytes().any(|b| b >= 0xF0);
    if !astral(a) && !astral(b) {
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// ToPrimitive with hint "number", as the relational operators apply it: arrays and
/// objects become strings, everything else stays itself (borrowed, not copied).
fn to_primitive(v: &Value) -> std::borrow::Cow<'_, Value> {
    match v {
        Value::Array(_) | Value::Object(_) => std::borrow::Cow::Owned(Value::String(to_string(v))),
        other => std::borrow::Cow::Borrowed(other),
    }
}

/// The Abstract Relational Comparison behind `<`, `<=`, `>`, `>=`: `None` when the
/// comparison is undefined (a `NaN` operand), which makes every operator false.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Value::Number(x), Value::Number(y)) = (a, b) {
        return as_f64(x).partial_cmp(&as_f64(y));
    }
    let (pa, pb) = (to_primitive(a), to_primitive(b));
    if let (Value::String(x), Value::String(y)) = (pa.as_ref(), pb.as_ref()) {
        return Some(cmp_utf16(x, y));
    }
    to_number(&pa).partial_cmp(&to_number(&pb))
}

/// `a < b`.
pub fn lt(a: &Value, b: &Value) -> bool {
    compare(a, b) == Some(Ordering::Less)
}

/// `a <= b`.
pub fn lte(a: &Value, b: &Value) -> bool {
    matches!(compare(a, b), Some(Ordering::Less | Ordering::Equal))
}

/// `a === b` for values parsed from JSON: objects and arrays are distinct references,
/// so they are never strictly equal to anything.
pub fn strict_equals(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => as_f64(x) == as_f64(y),
        (Value::String(x), Value::String(y)) => x == y,
        _ => false,
    }
}

/// SameValueZero, the equality of `Array.prototype.includes` (`NaN` equals `NaN`, but
/// JSON has no `NaN`, so this is `===` here).
pub fn same_value_zero(a: &Value, b: &Value) -> bool {
    strict_equals(a, b)
}

/// `JSON.stringify(value)` with JavaScript's number formatting and key order preserved.
pub fn stringify(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let f = as_f64(n);
            if f.is_finite() {
                out.push_str(&number_to_string(f));
            } else {
                out.push_str("null");
            }
        }
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

/// `typeof`-based type name as GrowthBook's `getType` reports it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
    }
}

/// `key in obj` for an object or array value (arrays have indices and `length`).
pub fn get_property<'a>(v: &'a Value, key: &str) -> Option<PropertyRef<'a>> {
    match v {
        Value::Object(map) => map.get(key).map(PropertyRef::Borrowed),
        Value::Array(items) => {
            if key == "length" {
                return Some(PropertyRef::Length(items.len()));
            }
            canonical_index(key)
                .and_then(|i| items.get(i))
                .map(PropertyRef::Borrowed)
        }
        _ => None,
    }
}

/// A property read from a JSON value: borrowed, or an array's computed `length`.
#[derive(Debug, Clone, Copy)]
pub enum PropertyRef<'a> {
    /// A value stored in the object or array.
    Borrowed(&'a Value),
    /// `array.length`.
    Length(usize),
}

impl PropertyRef<'_> {
    /// The property as an owned value.
    pub fn to_value(self) -> Value {
        match self {
            PropertyRef::Borrowed(v) => v.clone(),
            PropertyRef::Length(n) => Value::from(n),
        }
    }
}

/// A canonical array index ("0", "12"; not "01", "+1" or "1.0").
fn canonical_index(key: &str) -> Option<usize> {
    if key.is_empty() || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

/// An empty attribute map, for callers that have none.
pub fn empty_object() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_print_as_javascript_does() {
        assert_eq!(number_to_string(1.0), "1");
        assert_eq!(number_to_string(1.5), "1.5");
        assert_eq!(number_to_string(1e21), "1e+21");
        assert_eq!(number_to_string(-0.0), "0");
        assert_eq!(number_to_string(0.000001), "0.000001");
        assert_eq!(number_to_string(1e-7), "1e-7");
        assert_eq!(
            number_to_string(123456789012345680000.0),
            "123456789012345680000"
        );
    }

    #[test]
    fn string_to_number_follows_ecmascript() {
        assert_eq!(string_to_number(""), 0.0);
        assert_eq!(string_to_number("  8 "), 8.0);
        assert_eq!(string_to_number("0x10"), 16.0);
        assert_eq!(string_to_number("-Infinity"), f64::NEG_INFINITY);
        assert_eq!(string_to_number(".5"), 0.5);
        assert_eq!(string_to_number("5."), 5.0);
        assert!(string_to_number("inf").is_nan());
        assert!(string_to_number("abc").is_nan());
        assert!(string_to_number("1e").is_nan());
        assert!(string_to_number("-0x10").is_nan());
    }

    #[test]
    fn coercions_match_javascript() {
        assert_eq!(to_string(&json!([1, null, "a"])), "1,,a");
        assert_eq!(to_number(&json!([5])), 5.0);
        assert_eq!(to_number(&json!([])), 0.0);
        assert!(to_number(&json!([1, 2])).is_nan());
        assert!(lt(&json!("AZL"), &json!("alphabet")));
        assert!(lt(&json!(null), &json!(1)));
        assert!(!lt(&json!("abc"), &json!(1)) && !lte(&json!(1), &json!("abc")));
        assert!(lt(&json!(["a"]), &json!("b")));
        assert_eq!(
            stringify(&json!({"a": [1.0, "x\"y"]})),
            r#"{"a":[1,"x\"y"]}"#
        );
    }

    #[test]
    fn utf16_order_differs_from_utf8_for_astral_characters() {
        // U+FF5E (one unit 0xFF5E) vs U+1F600 (surrogates 0xD83D ...): UTF-16 puts the
        // emoji first, UTF-8 byte order puts it last.
        assert_eq!(cmp_utf16("\u{1F600}", "\u{FF5E}"), Ordering::Less);
        assert_eq!("\u{1F600}".cmp("\u{FF5E}"), Ordering::Greater);
    }
}
