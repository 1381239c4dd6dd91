//! Facts about the running process that reports include.

/// Peak resident memory of this process in bytes (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_kib("/proc/self/status", "VmHWM:")
}

/// Memory the system can give this process without swapping, in bytes (`MemAvailable` of
/// /proc/meminfo), where the OS reports it.
pub(crate) fn available_memory() -> Option<u64> {
    proc_kib("/proc/meminfo", "MemAvailable:")
}

/// The value in bytes of a `KEY: N kB` line of a /proc file.
fn proc_kib(file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time all live threads of this process have run, in seconds (the sum of each thread's
/// `/proc/self/task/*/schedstat`), where the OS reports it. Over an interval, its growth
/// divided by the wall time is how many threads were busy on average.
pub fn cpu_seconds() -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        // A thread that ends while the directory is read leaves an entry without a schedstat.
        let Some(stat) = task.ok().and_then(|t| std::fs::read_to_string(t.path().join("schedstat")).ok()) else {
            continue;
        };
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

/// The most threads of one kind (compute threads, loader workers) a run may ask for: four per
/// core. More only queue for the same cores, and an absurd count would exhaust memory creating
/// them.
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The CPU model name, for reports.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read of the CPU time while threads end and start still counts the live ones.
    #[test]
    fn cpu_time_is_reported_while_threads_come_and_go() {
        if cpu_seconds().is_none() {
            resnet_kernels::skip::skip("this OS does not report per-thread CPU time");
            return;
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let done = done.clone();
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let threads: Vec<_> = (0..8).map(|_| std::thread::spawn(|| ())).collect();
                    threads.into_iter().for_each(|t| t.join().unwrap());
                }
            })
        };
        let missing = (0..2000).filter(|_| cpu_seconds().is_none()).count();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        assert_eq!(missing, 0, "CPU time went unreported in {missing} of 2000 reads");
    }

    /// The process's CPU time grows while a thread computes (Linux reports it; elsewhere none).
    #[test]
    fn cpu_time_grows_while_computing() {
        let reported = cpu_seconds();
        if cfg!(target_os = "linux") {
            assert!(reported.is_some(), "Linux reports per-thread CPU time");
        }
        let Some(before) = reported else { return };
        let start = std::time::Instant::now();
        let mut x = 1u64;
        while cpu_seconds().unwrap() < before + 0.01 {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            assert!(start.elapsed().as_secs() < 30, "no CPU time counted after 30 s of computing");
        }
    }
}
