//! An endpoint's transformation as it is stored: the JavaScript that defines
//! `handler(webhook)`, and whether it runs. Run by `transform` (the sandbox) and applied by
//! `dispatch::transformed`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transformation {
    /// JavaScript defining `function handler(webhook) { … return webhook; }`; checked to
    /// compile (within the sandbox's limits) when saved.
    pub code: String,
    /// Off: deliveries go untransformed, and the code is kept for when it is turned on again.
    #[serde(default = "on")]
    pub enabled: bool,
}

fn on() -> bool {
    true
}

impl Transformation {
    /// What identifies this version of the code to the sandbox's cache of compiled
    /// transformations: a hash of the code, so an edit is compiled afresh and an unchanged
    /// endpoint's is compiled once (by each worker) however often its row is read.
    pub fn version(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.code.hash(&mut h);
        h.finish()
    }
}
