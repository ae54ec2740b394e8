//! Built-in deterministic models: the same user and input always get the same output,
//! with no files or servers needed. They stand behind `rec-v1` and `rec-v2` until real
//! models are configured, and make tests reproducible.

use crate::{Model, ModelError, Prediction};
use serde_json::{json, Value};

/// A deterministic recommender: ranks a fixed catalogue by a hash of user, input and a
/// per-model salt, and returns the top `k` item ids.
#[derive(Debug, Clone)]
pub struct HashRecommender {
    name: String,
    salt: u64,
    catalogue: u64,
    k: usize,
    /// Fail every request (for tests and demos of the error monitors).
    fail: bool,
}

impl HashRecommender {
    /// A recommender named `name` (its salt derives from the name).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            salt: fnv64(name.as_bytes()),
            catalogue: 500,
            k: 3,
            fail: false,
        }
    }

    /// A model that always fails with an internal error.
    pub fn failing(name: &str) -> Self {
        Self {
            fail: true,
            ..Self::new(name)
        }
    }
}

fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[async_trait::async_trait]
impl Model for HashRecommender {
    async fn predict(&self, user_id: &str, input: &Value) -> Result<Prediction, ModelError> {
        if self.fail {
            return Err(ModelError::Internal(format!(
                "{} is configured to fail",
                self.name
            )));
        }
        let mut seed = fnv64(user_id.as_bytes()) ^ self.salt ^ fnv64(input.to_string().as_bytes());
        let mut items = Vec::with_capacity(self.k);
        while items.len() < self.k {
            // splitmix64: a cheap, well-mixed deterministic sequence.
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let item = (z ^ (z >> 31)) % self.catalogue + 100;
            if !items.contains(&item) {
                items.push(item);
            }
        }
        Ok(Prediction {
            output: json!({ "items": items }),
            model_version: format!("builtin:{}", self.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deterministic_and_model_specific() {
        let (a, b) = (
            HashRecommender::new("rec-v1"),
            HashRecommender::new("rec-v2"),
        );
        let input = json!({"context": "homepage"});
        let p1 = a.predict("user-123", &input).await.unwrap();
        assert_eq!(p1, a.predict("user-123", &input).await.unwrap());
        assert_ne!(
            p1.output,
            b.predict("user-123", &input).await.unwrap().output
        );
        assert_eq!(p1.output["items"].as_array().unwrap().len(), 3);
        assert_eq!(
            HashRecommender::failing("x")
                .predict("u", &input)
                .await
                .unwrap_err()
                .kind(),
            "internal"
        );
    }
}
