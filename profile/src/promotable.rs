//! Whether a recording can be promoted to a profile, and the reasons it cannot.

use crate::record::Recording;

impl Recording {
    /// Why this recording cannot be promoted to a profile, or `Ok` when it can.
    pub fn promotable(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if self.drops > 0 {
            reasons.push(format!(
                "recording is lossy: {} events were dropped before they were recorded",
                self.drops
            ));
        }
        if self.sends_unobserved > 0 {
            reasons.push(format!(
                "recording is incomplete: the connects and sends of {} recordings were not observed (no sock_addr hooks), outbound peers may be missing",
                self.sends_unobserved
            ));
        }
        for (category, n) in &self.overflow {
            let name = serde_json::to_value(category)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            match category.cap() {
                Some(cap) => reasons.push(format!(
                    "{name}: {n} observations over the cap of {cap} were not kept"
                )),
                None if self.unrecognized.is_empty() => reasons.push(format!(
                    "{name}: {n} observations cannot be expressed in a policy"
                )),
                None => {
                    reasons.push(format!(
                    "{name}: {n} observations cannot be expressed in a policy (for example: {})",
                    self.unrecognized.iter().cloned().collect::<Vec<_>>().join(", ")
                ))
                }
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}
