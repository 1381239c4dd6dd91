//! A switchable wall-clock profiler: named scopes accumulate time and call counts while enabled;
//! when disabled a scope costs one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Option<HashMap<&'static str, (Duration, u64)>>> = Mutex::new(None);

/// Turns recording on or off.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Forgets everything recorded.
pub fn reset() {
    *TOTALS.lock().expect("profiler lock") = None;
}

/// Records the time until the returned guard drops under `name`.
pub fn scope(name: &'static str) -> Scope {
    Scope { name, start: ENABLED.load(Ordering::Relaxed).then(Instant::now) }
}

/// A running measurement (see [`scope`]).
#[must_use = "the scope measures until it is dropped"]
pub struct Scope {
    name: &'static str,
    start: Option<Instant>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let elapsed = start.elapsed();
            let mut guard = TOTALS.lock().expect("profiler lock");
            let entry = guard.get_or_insert_with(HashMap::new).entry(self.name).or_default();
            entry.0 += elapsed;
            entry.1 += 1;
        }
    }
}

/// Recorded `(name, total time, calls)`, longest first.
pub fn report() -> Vec<(&'static str, Duration, u64)> {
    let guard = TOTALS.lock().expect("profiler lock");
    let mut rows: Vec<_> = guard.iter().flat_map(|m| m.iter().map(|(k, v)| (*k, v.0, v.1))).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_enabled() {
        reset();
        drop(scope("off"));
        enable(true);
        drop(scope("on"));
        drop(scope("on"));
        enable(false);
        let r = report();
        assert!(r.iter().all(|(n, _, _)| *n != "off"));
        assert_eq!(r.iter().find(|(n, _, _)| *n == "on").map(|x| x.2), Some(2));
    }
}
