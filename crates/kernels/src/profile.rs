//! A switchable wall-clock profiler: named scopes accumulate time and call counts while enabled;
//! when disabled a scope costs one atomic load. Scopes may name the layer they run for, so a
//! report can be cut by operator or by layer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
type Totals = HashMap<(&'static str, String), (Duration, u64)>;
static TOTALS: Mutex<Option<Totals>> = Mutex::new(None);

/// Turns recording on or off.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Forgets everything recorded.
pub fn reset() {
    *TOTALS.lock().expect("profiler lock") = None;
}

/// Records the time until the returned guard drops under operator `op`.
pub fn scope(op: &'static str) -> Scope {
    layer_scope(op, "")
}

/// Records the time until the returned guard drops under operator `op` of layer `layer`
/// (a parameter name such as `layer1.0.conv1.weight`; its last component is dropped).
pub fn layer_scope(op: &'static str, layer: &str) -> Scope {
    if !ENABLED.load(Ordering::Relaxed) {
        return Scope { key: None, start: None };
    }
    let layer = layer.rsplit_once('.').map_or(layer, |(l, _)| l).to_string();
    Scope { key: Some((op, layer)), start: Some(Instant::now()) }
}

/// A running measurement (see [`scope`]).
#[must_use = "the scope measures until it is dropped"]
pub struct Scope {
    key: Option<(&'static str, String)>,
    start: Option<Instant>,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let (Some(start), Some(key)) = (self.start, self.key.take()) {
            let elapsed = start.elapsed();
            let mut guard = TOTALS.lock().expect("profiler lock");
            let entry = guard.get_or_insert_with(HashMap::new).entry(key).or_default();
            entry.0 += elapsed;
            entry.1 += 1;
        }
    }
}

/// One aggregated row of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Operator or layer name.
    pub name: String,
    /// Total time.
    pub time: Duration,
    /// Calls.
    pub calls: u64,
}

fn aggregate(by: impl Fn(&(&'static str, String)) -> String) -> Vec<Row> {
    let guard = TOTALS.lock().expect("profiler lock");
    let mut rows: HashMap<String, (Duration, u64)> = HashMap::new();
    for (k, v) in guard.iter().flat_map(|m| m.iter()) {
        let e = rows.entry(by(k)).or_default();
        e.0 += v.0;
        e.1 += v.1;
    }
    let mut rows: Vec<Row> = rows.into_iter().map(|(name, (time, calls))| Row { name, time, calls }).collect();
    rows.sort_by(|a, b| b.time.cmp(&a.time).then(a.name.cmp(&b.name)));
    rows
}

/// Time per operator, longest first.
pub fn by_operator() -> Vec<Row> {
    aggregate(|(op, _)| op.to_string())
}

/// Time per layer (scopes without a layer are grouped by operator), longest first.
pub fn by_layer() -> Vec<Row> {
    aggregate(|(op, layer)| if layer.is_empty() { format!("({op})") } else { layer.clone() })
}

/// Time per operator within each layer (`"layer: operator"`, or the operator alone outside
/// layers), largest first.
pub fn by_operator_and_layer() -> Vec<Row> {
    aggregate(|(op, layer)| if layer.is_empty() { format!("({op})") } else { format!("{layer}: {op}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_enabled_and_aggregates() {
        reset();
        drop(scope("off"));
        enable(true);
        drop(scope("on"));
        drop(layer_scope("conv", "layer1.0.conv1.weight"));
        drop(layer_scope("conv", "layer1.0.conv2.weight"));
        enable(false);
        let ops = by_operator();
        assert!(ops.iter().all(|r| r.name != "off"));
        assert_eq!(ops.iter().find(|r| r.name == "conv").map(|r| r.calls), Some(2));
        let layers = by_layer();
        assert!(layers.iter().any(|r| r.name == "layer1.0.conv1"));
        assert!(layers.iter().any(|r| r.name == "(on)"));
        let both = by_operator_and_layer();
        assert_eq!(both.iter().find(|r| r.name == "layer1.0.conv2: conv").map(|r| r.calls), Some(1));
        assert!(both.iter().any(|r| r.name == "(on)"));
    }
}
