//! Skipped tests, made visible. A test that cannot do (part of) its work on this machine calls
//! [`skip`] (for a CPU feature, which nothing can install) or [`skip_unless_ci`] (for a piece CI
//! installs itself: onnxruntime, the CIFAR-10 copy) and goes on without that part. Each writes
//! one line starting with [`MARKER`] straight to the process's standard error, past the test
//! harness's output capture, so `cargo test` shows it even for a passing test and `.ci/run` can
//! count it.

use std::io::Write;

/// The start of every skip line: `SKIPPED: <test>: <reason>`.
pub const MARKER: &str = "SKIPPED: ";

/// Says that the running test leaves out what `reason` names, which this CPU lacks.
pub fn skip(reason: &str) {
    let line = format!("{MARKER}{}: {reason}\n", test_name());
    // One write, so that lines of tests running side by side do not interleave within it.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// As [`skip`], for a piece that CI installs itself: with `CI=true` in the environment a missing
/// piece means CI is broken, and the test fails instead.
///
/// # Panics
/// When the environment variable `CI` is `true`.
pub fn skip_unless_ci(reason: &str) {
    skip_or_fail(reason, running_in_ci());
}

fn skip_or_fail(reason: &str, in_ci: bool) {
    if in_ci {
        panic!("{}: {reason}; CI (CI=true) provides this, so the test fails instead of skipping", test_name());
    }
    skip(reason);
}

/// Whether `CI=true`, as CI systems set it.
pub fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The running test's name: the test harness names each test's thread after it.
fn test_name() -> String {
    std::thread::current().name().unwrap_or("a test").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "CI (CI=true) provides this")]
    fn a_skip_of_what_ci_installs_fails_in_ci() {
        skip_or_fail("onnxruntime not importable", true);
    }
}
