//! A fast path for reading the read model's [`Fields`] out of a stored traffic payload.
//!
//! Replaying a log is mostly parsing: serde_json validates and decodes every byte of a
//! prediction's `input` and `output`, which the read model never looks at. This scanner
//! walks the top-level object, decodes the few fields the read model needs, and skips
//! everything else by bracket matching.
//!
//! It is a fast path, never a second opinion: whenever a payload is not in the plain shape
//! verdict's own encoder writes (escaped strings, a shadow comparison, a duplicate or
//! missing field, a number out of range, anything unexpected), it returns `None` and the
//! caller parses with serde_json. Where it does answer, it answers what serde_json would
//! (property-tested against it). The one leniency: inside a skipped object or array (an
//! unknown field, the model's input and output), brackets and strings are matched but
//! scalars, UTF-8 and control characters are not checked; those bytes were written by
//! serde_json and are covered by the record's CRC.

use crate::readmodel::Fields;
use std::borrow::Cow;

/// The fields of a traffic payload, or `None` to let serde_json decide.
pub fn fields(payload: &[u8]) -> Option<Fields<'_>> {
    let mut s = Scanner { b: payload, i: 0 };
    let mut f = Fields::default();
    let mut seen = 0u8;
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        return None; // missing required fields: serde's error
    }
    loop {
        s.ws();
        let key = s.raw_str()?;
        s.ws();
        s.expect(b':')?;
        s.ws();
        // Keys compare as bytes: the known ones are ASCII, so only other keys need the
        // UTF-8 check serde_json makes on every key.
        let bit = match key {
            b"experiment_id" => {
                f.experiment_id = Cow::Borrowed(s.plain_str()?);
                1
            }
            b"user_id" => {
                f.user_id = Cow::Borrowed(s.plain_str()?);
                2
            }
            b"variant" => {
                f.variant = if s.null() {
                    None
                } else {
                    Some(Cow::Borrowed(s.plain_str()?))
                };
                4
            }
            b"latency_ms" => {
                f.latency_ms = s.number()?;
                8
            }
            b"model_ms" => {
                f.model_ms = if s.null() { None } else { Some(s.number()?) };
                16
            }
            b"shadow" => {
                f.shadow = s.boolean()?;
                32
            }
            b"comparison" => {
                // Only shadow predictions carry one; serde_json decodes those.
                if !s.null() {
                    return None;
                }
                f.comparison = None;
                64
            }
            b"amount" => {
                f.amount = s.number()?;
                128
            }
            _ => {
                if !SKIPPED.contains(&key) {
                    std::str::from_utf8(key).ok()?;
                }
                s.skip_value()?;
                0
            }
        };
        if seen & bit != 0 {
            return None; // a duplicate field: serde's error
        }
        seen |= bit;
        s.ws();
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    // Trailing bytes are serde's error; a missing experiment or user too.
    (s.i == s.b.len() && seen & 3 == 3).then_some(f)
}

/// Keys of traffic payloads the read model does not use (ASCII, so no UTF-8 check).
const SKIPPED: &[&[u8]] = &[
    b"model",
    b"model_version",
    b"prediction_id",
    b"input",
    b"output",
    b"error_kind",
    b"message",
    b"bucket",
    b"reason",
    b"experiment_version",
    b"conversion_type",
    b"action",
    b"item_id",
];

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// A string without escapes or control characters, as raw bytes.
    fn raw_str(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        let rest = &self.b[start..];
        let len = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        Some(&rest[..len])
    }

    /// A string without escapes or control characters, borrowed.
    fn plain_str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.raw_str()?).ok()
    }

    fn null(&mut self) -> bool {
        let yes = self.b[self.i..].starts_with(b"null");
        if yes {
            self.i += 4;
        }
        yes
    }

    fn boolean(&mut self) -> Option<bool> {
        let rest = &self.b[self.i..];
        if rest.starts_with(b"true") {
            self.i += 4;
            Some(true)
        } else if rest.starts_with(b"false") {
            self.i += 5;
            Some(false)
        } else {
            None
        }
    }

    /// A JSON number (strict grammar) as the f64 serde_json would give: correctly rounded
    /// (serde_json's `float_roundtrip`, which the workspace enables), `-0` as -0.0, and
    /// out-of-range refused.
    fn number(&mut self) -> Option<f64> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let d = self.i;
            self.digits();
            if self.i == d {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            let d = self.i;
            self.digits();
            if self.i == d {
                return None;
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        text.parse::<f64>().ok().filter(|x| x.is_finite())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    /// Skips one value: a scalar strictly; an object or array by matching its brackets
    /// (strings honour escapes).
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' | b'[' => {}
            b'"' => {
                // Like serde_json's ignore_str: no UTF-8 check; escapes go to serde.
                return self.raw_str().map(|_| ());
            }
            b't' | b'f' => return self.boolean().map(|_| ()),
            b'n' => return self.null().then_some(()),
            _ => return self.number().map(|_| ()),
        }
        // The open brackets as a bit stack (1 = object), so skipping allocates nothing;
        // deeper than 128 goes to serde_json, whose own limit is 128.
        let (mut kinds, mut depth) = (0u128, 0u32);
        loop {
            match self.next()? {
                b'"' => loop {
                    match self.next()? {
                        b'"' => break,
                        b'\\' => {
                            self.next()?;
                        }
                        _ => {}
                    }
                },
                c @ (b'{' | b'[') => {
                    if depth == 128 {
                        return None;
                    }
                    kinds = kinds << 1 | u128::from(c == b'{');
                    depth += 1;
                }
                c @ (b'}' | b']') => {
                    if depth == 0 || (kinds & 1 == 1) != (c == b'}') {
                        return None;
                    }
                    kinds >>= 1;
                    depth -= 1;
                }
                // Scalars and separators inside the brackets.
                _ => continue,
            }
            if depth == 0 {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde(payload: &[u8]) -> Option<Fields<'_>> {
        serde_json::from_slice(payload).ok()
    }

    fn same(a: &Fields<'_>, b: &Fields<'_>) -> bool {
        a.experiment_id == b.experiment_id
            && a.user_id == b.user_id
            && a.variant == b.variant
            && a.latency_ms.to_bits() == b.latency_ms.to_bits()
            && a.model_ms.map(f64::to_bits) == b.model_ms.map(f64::to_bits)
            && a.shadow == b.shadow
            && a.comparison.is_none()
            && b.comparison.is_none()
            && a.amount.to_bits() == b.amount.to_bits()
    }

    /// Where the scanner answers, serde_json answers the same; where serde_json refuses,
    /// the scanner does not answer.
    fn agrees(payload: &[u8]) {
        match (fields(payload), serde(payload)) {
            (Some(a), Some(b)) => assert!(
                same(&a, &b),
                "{}: {a:?} vs {b:?}",
                String::from_utf8_lossy(payload)
            ),
            (Some(a), None) => panic!(
                "scanner accepted what serde refuses: {} -> {a:?}",
                String::from_utf8_lossy(payload)
            ),
            (None, _) => {}
        }
    }

    #[test]
    fn encoder_output_is_read_without_serde() {
        let made = br#"{"experiment_id":"exp-001","user_id":"u42","variant":"treatment","model":"rec-v2","model_version":"rec-v2.onnx@00ff","prediction_id":"0190a6c4-1b2c-7d3e-8f40-123456789abc","input":{"context":"homepage","n":[1,2.5e-3,{"x":"}]\"["}]},"output":{"items":["a","b"],"scores":[0.9,-0.0,1E+2]},"latency_ms":0.8125,"model_ms":0.25,"shadow":false}"#;
        let f = fields(made).expect("plain payload");
        assert_eq!(f.experiment_id, "exp-001");
        assert_eq!(f.user_id, "u42");
        assert_eq!(f.variant.as_deref(), Some("treatment"));
        assert_eq!(f.latency_ms, 0.8125);
        assert_eq!(f.model_ms, Some(0.25));
        assert!(!f.shadow);
        agrees(made);
        let converted = br#"{"experiment_id":"exp-001","user_id":"u42","variant":null,"amount":-0,"metadata":{}}"#;
        let f = fields(converted).unwrap();
        assert!(f.amount == 0.0 && f.amount.is_sign_negative());
        agrees(converted);
    }

    #[test]
    fn unusual_payloads_go_to_serde() {
        for p in [
            &br#"{"experiment_id":"e\"x","user_id":"u"}"#[..],
            br#"{"experiment_id":"e","user_id":"u","comparison":{"agree":true,"control_latency_ms":1.0}}"#,
            br#"{"experiment_id":"e","user_id":"u","user_id":"v"}"#,
            br#"{"experiment_id":"e"}"#,
            br#"{"experiment_id":"e","user_id":"u"} x"#,
            br#"{"experiment_id":"e","user_id":"u","amount":1e400}"#,
            br#"{"experiment_id":"e","user_id":"u","amount":01}"#,
            br#"{"experiment_id":"e","user_id":"u","amount":.5}"#,
            br#"{"experiment_id":"e","user_id":"u","input":[1,2}"#,
            br#"{"experiment_id":"e","user_id":"u","input":[1,2},"x":1}"#,
            br#"{"experiment_id":"e","user_id":"u","input":{"a":1],"x":1}"#,
            br#"{}"#,
            b"",
        ] {
            assert!(fields(p).is_none(), "{}", String::from_utf8_lossy(p));
            agrees(p);
        }
    }

    fn json_number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| x.to_string()),
            any::<i64>().prop_map(|x| x.to_string()),
            any::<u64>().prop_map(|x| x.to_string()),
            "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
        ]
    }

    fn json_text() -> impl Strategy<Value = String> {
        // Mostly plain; sometimes escapes, quotes, non-ASCII.
        prop_oneof!["[a-z0-9-]{0,12}", "[a-z\\\\\"é\u{1F600}]{0,6}"]
            .prop_map(|s| serde_json::to_string(&s).unwrap())
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            json_number(),
            json_text(),
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((json_text(), inner), 0..4).prop_map(|v| {
                    let body: Vec<String> =
                        v.into_iter().map(|(k, x)| format!("{k}:{x}")).collect();
                    format!("{{{}}}", body.join(","))
                }),
            ]
        })
    }

    /// A field: usually of the right type for its key (so both parsers answer and their
    /// answers are compared), sometimes any value (so serde refuses and the scanner must not
    /// answer).
    fn field() -> impl Strategy<Value = String> {
        let text = || json_text().boxed();
        let num = || json_number().boxed();
        let typed = prop_oneof![
            text().prop_map(|v| format!("\"variant\":{v}")),
            Just("\"variant\":null".to_owned()),
            num().prop_map(|v| format!("\"latency_ms\":{v}")),
            num().prop_map(|v| format!("\"model_ms\":{v}")),
            Just("\"model_ms\":null".to_owned()),
            prop::bool::ANY.prop_map(|v| format!("\"shadow\":{v}")),
            Just("\"comparison\":null".to_owned()),
            Just("\"comparison\":{\"agree\":true,\"control_latency_ms\":1.5}".to_owned()),
            num().prop_map(|v| format!("\"amount\":{v}")),
            value().prop_map(|v| format!("\"input\":{v}")),
            value().prop_map(|v| format!("\"output\":{v}")),
            (text(), value()).prop_map(|(k, v)| format!("{k}:{v}")),
        ];
        let known = prop_oneof![
            Just("experiment_id"),
            Just("user_id"),
            Just("variant"),
            Just("latency_ms"),
            Just("model_ms"),
            Just("shadow"),
            Just("comparison"),
            Just("amount"),
        ];
        let any_typed = (known, value()).prop_map(|(k, v)| format!("\"{k}\":{v}"));
        prop_oneof![8 => typed, 1 => any_typed]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Generated payloads: well-formed objects of known and unknown fields with values
        /// of every kind (so most fail serde's typing), plus random bytes and truncations.
        #[test]
        fn never_disagrees_with_serde(
            mut fs in prop::collection::vec(field(), 0..8),
            id in json_text(),
            user in json_text(),
            ws in prop::bool::ANY,
            cut in 0usize..400,
        ) {
            fs.push(format!("\"experiment_id\":{id}"));
            fs.push(format!("\"user_id\":{user}"));
            let n = fs.len();
            fs.rotate_right(cut % n);
            let sep = if ws { " ,\n " } else { "," };
            let payload = format!("{{{}}}", fs.join(sep));
            agrees(payload.as_bytes());
            agrees(&payload.as_bytes()[..cut.min(payload.len())]);
        }

        #[test]
        fn random_bytes_never_disagree(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            agrees(&bytes);
        }
    }
}
