//! The conditioning cache: prompts already encoded, most recently used kept, so a long-running
//! process (a server) holds a bounded number of them.

use std::collections::{HashMap, VecDeque};

use burn::tensor::TensorData;

/// How many conditionings are kept (a few MB each at the 2B model's width).
pub const CACHED_CONDITIONINGS: usize = 64;

/// Model text (with the text encoder's adapters) → conditioning `[1, L, hidden]` on the host,
/// least recently used evicted first.
#[derive(Debug, Default)]
pub(crate) struct ConditioningCache {
    entries: HashMap<String, TensorData>,
    /// Keys from least to most recently used.
    order: VecDeque<String>,
}

impl ConditioningCache {
    pub fn get(&mut self, key: &str) -> Option<TensorData> {
        let data = self.entries.get(key)?.clone();
        self.touch(key);
        Some(data)
    }

    pub fn insert(&mut self, key: String, data: TensorData) {
        if self.entries.insert(key.clone(), data).is_some() {
            self.touch(&key);
            return;
        }
        self.order.push_back(key);
        while self.order.len() > CACHED_CONDITIONINGS {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    fn touch(&mut self, key: &str) {
        if let Some(i) = self.order.iter().position(|k| k == key) {
            let k = self.order.remove(i).expect("present");
            self.order.push_back(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_conditionings_are_evicted() {
        let mut cache = ConditioningCache::default();
        let data = |v: f32| TensorData::new(vec![v], [1]);
        for i in 0..CACHED_CONDITIONINGS {
            cache.insert(format!("p{i}"), data(i as f32));
        }
        assert!(cache.get("p0").is_some()); // p0 is now the most recent
        cache.insert("new".into(), data(-1.0));
        assert!(cache.get("p1").is_none(), "the least recently used went");
        assert!(cache.get("p0").is_some() && cache.get("new").is_some());
        assert_eq!(cache.entries.len(), CACHED_CONDITIONINGS);
    }
}
