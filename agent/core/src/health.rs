//! What `/healthz` reports: the state of each running subsystem (the leader's log
//! pipeline, syscall monitoring, each sink…), and `node_agent_subsystem_up{subsystem}`.
//! Subsystems set their own state; the endpoint reads [`snapshot`].

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use prometheus::{IntGaugeVec, Opts};

/// A subsystem's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Up,
    /// Working, but something needs an operator (e.g. a sink refusing our credentials):
    /// reported, not fatal.
    Degraded(String),
    /// Stopped by an error; the agent is exiting so that a standby takes over.
    Failed(String),
}

impl State {
    pub fn is_up(&self) -> bool {
        matches!(self, State::Up)
    }
}

struct Registry {
    states: Mutex<BTreeMap<String, State>>,
    up: IntGaugeVec,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        states: Mutex::new(BTreeMap::new()),
        up: crate::telemetry::register(
            IntGaugeVec::new(
                Opts::new(
                    "node_agent_subsystem_up",
                    "Whether a subsystem of the agent works (1) or is degraded or failed (0).",
                ),
                &["subsystem"],
            )
            .expect("static metric definition"),
        ),
    })
}

fn states() -> std::sync::MutexGuard<'static, BTreeMap<String, State>> {
    match registry().states.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    }
}

/// Sets `subsystem`'s state.
pub fn set(subsystem: &str, state: State) {
    registry()
        .up
        .with_label_values(&[subsystem])
        .set(i64::from(state.is_up()));
    states().insert(subsystem.to_string(), state);
}

/// Forgets `subsystem` (it stopped normally, e.g. leadership ended).
pub fn clear(subsystem: &str) {
    let _ = registry().up.remove_label_values(&[subsystem]);
    states().remove(subsystem);
}

/// Every subsystem's state, by name.
pub fn snapshot() -> BTreeMap<String, State> {
    states().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_kept_and_cleared() {
        set("test-a", State::Up);
        set("test-b", State::Degraded("401 from loki".into()));
        let s = snapshot();
        assert_eq!(s["test-a"], State::Up);
        assert!(matches!(&s["test-b"], State::Degraded(m) if m.contains("401")));
        clear("test-a");
        assert!(!snapshot().contains_key("test-a"));
    }
}
