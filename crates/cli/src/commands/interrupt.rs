//! Ctrl-C, SIGTERM and SIGHUP: the first asks a run to finish its step and write a checkpoint, a
//! second quits at once. A stopped run exits 130 (128 + SIGINT, as a shell reports an interrupted
//! command), so a script can tell it from a finished one.

use anyhow::Context;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The exit status of a run stopped by a signal.
pub const STOPPED: i32 = 130;

/// A repeat of the signal sooner than this after the first is the same request delivered twice
/// (`timeout` and process-group kills signal the process and its group), not a second interrupt.
const REPEAT_WINDOW: Duration = Duration::from_secs(1);

/// Installs the handler and returns the flag it sets.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let first = OnceLock::new();
    ctrlc::set_handler(move || {
        let first: &Instant = first.get_or_init(Instant::now);
        if !flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupt: finishing the step and writing a checkpoint (interrupt again to quit at once)");
        } else if first.elapsed() >= REPEAT_WINDOW {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(STOPPED);
        }
    })
    .context("cannot install the interrupt handler")?;
    Ok(stop)
}

/// Ends the process as a stopped run, after what it printed.
pub fn exit_stopped() -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(STOPPED);
}
