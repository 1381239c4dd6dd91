//! Ctrl-C, SIGTERM and SIGHUP: the first asks a run to finish its step and write a checkpoint, a
//! second quits at once. A stopped run exits 130 (128 + SIGINT, as a shell reports an interrupted
//! command), so a script can tell it from a finished one.

use anyhow::Context;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The exit status of a run stopped by a signal.
pub const STOPPED: i32 = 130;

/// Installs the handler and returns the flag it sets.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(STOPPED);
        }
        eprintln!("\ninterrupt: finishing the step and writing a checkpoint (interrupt again to quit at once)");
    })
    .context("cannot install the interrupt handler")?;
    Ok(stop)
}

/// Ends the process as a stopped run, after what it printed.
pub fn exit_stopped() -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(STOPPED);
}
