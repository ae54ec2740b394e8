//! Comparing a shadow model's output with the control's, for the shadow (mirror) variants
//! the server runs off the request path. Pure functions of the two outputs, so the server
//! can record the comparison in its event and aggregate agreement and difference later.

use serde_json::Value;

/// How a shadow output compares with the control's for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Whether the decision agrees: the top item (`items[0]`) for recommenders, else `label`,
    /// else `predictions`, else the whole output.
    pub agree: bool,
    /// For recommenders, the share of the control's items the shadow also returned.
    pub overlap: Option<f64>,
    /// Mean absolute difference over the numeric outputs both have with the same shape
    /// (`probabilities`, `scores`, regression values); `None` when there are none.
    pub mean_abs_diff: Option<f64>,
}

fn numbers(v: &Value, out: &mut Vec<f64>) -> bool {
    match v {
        Value::Number(n) => n.as_f64().map(|x| out.push(x)).is_some(),
        Value::Array(items) => items.iter().all(|i| numbers(i, out)),
        _ => false,
    }
}

/// Compares `shadow` with `control`.
pub fn compare(control: &Value, shadow: &Value) -> Comparison {
    let key = ["items", "label", "predictions"]
        .into_iter()
        .find(|k| control.get(k).is_some() && shadow.get(k).is_some());
    let (agree, overlap) = match key {
        Some("items") => {
            let (c, s) = (&control["items"], &shadow["items"]);
            let (c, s) = (
                c.as_array().map_or(&[][..], |v| v),
                s.as_array().map_or(&[][..], |v| v),
            );
            let shared = c.iter().filter(|i| s.contains(i)).count();
            let overlap = (!c.is_empty()).then(|| shared as f64 / c.len() as f64);
            (!c.is_empty() && c.first() == s.first(), overlap)
        }
        Some(k) => (control[k] == shadow[k], None),
        None => (control == shadow, None),
    };
    let mut total = 0.0;
    let mut count = 0usize;
    if let (Value::Object(c), Value::Object(s)) = (control, shadow) {
        for (k, cv) in c {
            // Item ids and labels are identifiers, not magnitudes.
            if matches!(k.as_str(), "items" | "label") {
                continue;
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            if let Some(sv) = s.get(k) {
                if numbers(cv, &mut a) && numbers(sv, &mut b) && a.len() == b.len() && !a.is_empty()
                {
                    total += a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f64>();
                    count += a.len();
                }
            }
        }
    }
    Comparison {
        agree,
        overlap,
        mean_abs_diff: (count > 0).then(|| total / count as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recommenders_classifiers_and_fallbacks() {
        let c = json!({"items": [1, 2, 3], "scores": [0.5, 0.3, 0.1], "label": 0});
        let s = json!({"items": [1, 3, 9], "scores": [0.4, 0.3, 0.2], "label": 0});
        let r = compare(&c, &s);
        assert!(r.agree);
        assert_eq!(r.overlap, Some(2.0 / 3.0));
        assert!((r.mean_abs_diff.unwrap() - 0.2 / 3.0).abs() < 1e-12);
        let r = compare(&c, &json!({"items": [2, 1, 3], "scores": [0.5, 0.3, 0.1]}));
        assert!(!r.agree);
        assert_eq!(r.overlap, Some(1.0));
        assert_eq!(r.mean_abs_diff, Some(0.0));
        let r = compare(
            &json!({"label": 2, "probabilities": [[0.1, 0.9]]}),
            &json!({"label": 1, "probabilities": [[0.6, 0.4]]}),
        );
        assert!(!r.agree);
        assert!((r.mean_abs_diff.unwrap() - 0.5).abs() < 1e-12);
        let r = compare(&json!({"predictions": [1]}), &json!({"predictions": [1]}));
        assert!(r.agree && r.overlap.is_none());
        let r = compare(&json!({"x": "a"}), &json!({"y": "a"}));
        assert!(!r.agree && r.mean_abs_diff.is_none());
    }
}
