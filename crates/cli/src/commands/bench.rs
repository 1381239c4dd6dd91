//! `resnet bench`: training-step or inference throughput on random data.

use super::ModelArgs;
use anyhow::bail;
use resnet_kernels::rng::Rng;
use resnet_kernels::{profile, threads};
use resnet_models::{InitConfig, ResNet};
use resnet_nn::optim::{Sgd, SgdConfig};
use resnet_nn::Tensor;
use resnet_train::memory::{check_batch, BatchPlan, Pass};
use resnet_train::step::{train_step, StepBuffers};
use resnet_train::system;
use std::time::Instant;

/// What to time.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward, loss, backward and SGD update.
    Train,
    /// Eval-mode forward pass.
    Infer,
}

/// Arguments of `resnet bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model name (see `resnet models`).
    #[arg(long, default_value = "resnet20")]
    model: String,
    #[command(flatten)]
    model_args: ModelArgs,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Train step or inference.
    #[arg(long, value_enum, default_value_t = Mode::Train)]
    mode: Mode,
    /// Input side in pixels (default: the network's).
    #[arg(long)]
    size: Option<usize>,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Convolution arithmetic.
    #[arg(long, value_enum, default_value_t = super::train::PrecisionArg::Fp32)]
    precision: super::train::PrecisionArg,
    /// Print the time spent per layer type.
    #[arg(long)]
    profile: bool,
    /// Print JSON (`images_per_sec`, `peak_rss_bytes`, ...).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.batch == 0 || args.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    let kernels = resnet_train::config::Precision::from(args.precision).kernel_config().map_err(anyhow::Error::msg)?;
    let spec = args.model_args.spec(&args.model)?;
    let size = args.size.unwrap_or_else(|| spec.default_input_size());
    let mut net = ResNet::new(spec.clone())?;
    net.set_kernel_config(kernels).map_err(anyhow::Error::msg)?;
    net.check_input([args.batch, size, size, spec.in_channels])?;
    let pass = match args.mode {
        Mode::Train => Pass::Train,
        Mode::Infer => Pass::Infer,
    };
    // One input batch, made before the passes.
    check_batch(BatchPlan {
        spec: &spec,
        input: (size, size),
        batch: args.batch,
        pass,
        flag: "--batch",
        prefetched: 0,
        views: 1,
    })?;
    if args.mode == Mode::Train && args.batch < 2 {
        bail!("training needs a batch of at least 2 (batch norm statistics)");
    }
    net.init(&InitConfig::default());
    let mut rng = Rng::new(0);
    let x = Tensor::from_vec(
        [args.batch, size, size, spec.in_channels],
        (0..args.batch * size * size * spec.in_channels).map(|_| rng.normal() as f32).collect(),
    );
    let labels: Vec<u32> = (0..args.batch).map(|_| rng.below(spec.num_classes as u64) as u32).collect();
    let mut sgd = Sgd::new(SgdConfig::default());
    let mut buffers = StepBuffers::default();
    let mut step = |net: &mut ResNet| match args.mode {
        Mode::Train => {
            train_step(net, &mut sgd, &x, &labels, 0.01, 0.0, &mut buffers);
        }
        Mode::Infer => {
            net.infer(&x);
        }
    };
    for _ in 0..args.warmup {
        step(&mut net);
    }
    profile::reset();
    profile::enable(args.profile);
    let mut times = Vec::with_capacity(args.steps);
    let cpu_start = system::cpu_seconds();
    let start = Instant::now();
    for _ in 0..args.steps {
        let t = Instant::now();
        step(&mut net);
        times.push(t.elapsed().as_secs_f64());
    }
    let total = start.elapsed().as_secs_f64();
    // Threads busy on average over the timed steps (waiting workers spin briefly, then sleep).
    let busy = cpu_start.zip(system::cpu_seconds()).map(|(a, b)| (b - a) / total);
    profile::enable(false);
    times.sort_by(|a, b| a.total_cmp(b));
    let images_per_sec = (args.batch * args.steps) as f64 / total;
    let ms_mean = 1e3 * total / args.steps as f64;
    let ms_median = 1e3 * times[times.len() / 2];
    let macs = spec.summary(size, size).macs as f64;
    // Forward multiply-adds per image; a training step does about three times that work.
    let passes = if args.mode == Mode::Train { 3.0 } else { 1.0 };
    let gflops = 2.0 * macs * passes * images_per_sec / 1e9;
    let peak = system::peak_rss_bytes();
    let mode = format!("{:?}", args.mode).to_lowercase();
    if args.json {
        let mut v = serde_json::json!({
            "model": spec.name, "mode": mode, "batch": args.batch, "input": size, "precision": format!("{:?}", args.precision).to_lowercase(),
            "threads": threads::num_threads(), "steps": args.steps, "warmup": args.warmup,
            "images_per_sec": images_per_sec, "ms_per_step": ms_mean, "ms_per_step_median": ms_median,
            "gflops": gflops, "peak_rss_bytes": peak, "cpu": system::cpu_name(), "busy_threads": busy,
        });
        if args.profile {
            let rows = |r: Vec<profile::Row>| -> serde_json::Value {
                r.iter()
                    .map(|r| serde_json::json!({"name": r.name, "ms_per_step": 1e3 * r.time.as_secs_f64() / args.steps as f64, "calls": r.calls}))
                    .collect()
            };
            v["profile"] = serde_json::json!({"by_operator": rows(profile::by_operator()), "by_layer": rows(profile::by_layer()),
                "by_operator_and_layer": rows(profile::by_operator_and_layer())});
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} {mode}, batch {}, {size}x{size}, {}, {} after {} warm-up",
        spec.name,
        args.batch,
        super::plural(threads::num_threads() as u64, "thread"),
        super::plural(args.steps as u64, "step"),
        args.warmup
    );
    println!("  {images_per_sec:.1} images/s, {ms_mean:.2} ms/step (median {ms_median:.2}), {gflops:.1} GFLOP/s");
    if let Some(p) = peak {
        println!("  peak RSS {:.1} MiB", p as f64 / (1024.0 * 1024.0));
    }
    if let Some(b) = busy {
        println!("  busy threads {b:.2} of {} on average", threads::num_threads());
    }
    if args.profile {
        let print = |title: &str, rows: Vec<profile::Row>| {
            let sum: f64 = rows.iter().map(|r| r.time.as_secs_f64()).sum();
            println!("\n  {:<28} {:>10} {:>8} {:>8}", title, "ms/step", "share", "calls");
            for r in rows {
                let secs = r.time.as_secs_f64();
                println!(
                    "  {:<28} {:>10.2} {:>7.1}% {:>8}",
                    r.name,
                    1e3 * secs / args.steps as f64,
                    100.0 * secs / total,
                    r.calls / args.steps as u64
                );
            }
            println!(
                "  {:<28} {:>10.2} {:>7.1}%",
                "(unattributed)",
                1e3 * (total - sum) / args.steps as f64,
                100.0 * (total - sum) / total
            );
        };
        print("operator", profile::by_operator());
        print("layer", profile::by_layer());
        print("layer: operator", profile::by_operator_and_layer());
    }
    Ok(())
}
