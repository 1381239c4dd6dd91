//! `resnet bench`: training-step or inference throughput on random data.

use super::ModelArgs;
use anyhow::bail;
use resnet_kernels::rng::Rng;
use resnet_kernels::{profile, threads, KernelConfig};
use resnet_models::{InitConfig, ResNet, ResNetSpec};
use resnet_nn::optim::{Sgd, SgdConfig};
use resnet_nn::Tensor;
use resnet_quant::{Calibrator, Method, QuantizedResNet};
use resnet_train::config::{FineTune, Precision};
use resnet_train::distributed::{BucketExchange, Communicator, GradientBuckets, BUCKET_BYTES};
use resnet_train::memory::{check_batch, BatchPlan, Pass};
use resnet_train::step::{train_step, train_step_exchanging, StepBuffers};
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

/// Arithmetic of the timed network.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchPrecision {
    /// f32 throughout.
    Fp32,
    /// bf16 dot products, f32 accumulation.
    Bf16,
    /// int8 inference (`resnet quantize`): the random network quantized with ranges from the
    /// random batch, for speed alone.
    Int8,
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
    #[arg(long, value_enum, default_value_t = BenchPrecision::Fp32)]
    precision: BenchPrecision,
    /// Parts to hold fixed in training steps, as `resnet train --freeze` (stem, layer1, ...,
    /// fc, backbone): the step then skips their backward work.
    #[arg(long, value_delimiter = ',', value_parser = super::train::part)]
    freeze: Option<Vec<String>>,
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
    let float = match args.precision {
        BenchPrecision::Fp32 => Precision::Fp32,
        BenchPrecision::Bf16 => Precision::Bf16,
        BenchPrecision::Int8 if args.mode == Mode::Train => {
            bail!("--precision int8 is for --mode infer (int8 networks do not train)")
        }
        BenchPrecision::Int8 => Precision::Fp32,
    };
    let kernels = float.kernel_config().map_err(anyhow::Error::msg)?;
    // Under mpirun each rank times its share of the batch, the gradients averaged over the
    // ranks in training; rank 0 reports the whole batch's rate.
    let group = super::ranks::join(super::ranks::DEFAULT_TIMEOUT)?;
    let ranks = group.size();
    if !args.batch.is_multiple_of(ranks) {
        bail!("--batch {} is the batch of all {ranks} ranks together: use a multiple of {ranks}", args.batch);
    }
    let local = args.batch / ranks;
    let spec = args.model_args.spec(&args.model)?;
    let size = args.size.unwrap_or_else(|| spec.default_input_size());
    let mut net = network(&args, spec, size, local)?;
    net.set_kernel_config(kernels).map_err(anyhow::Error::msg)?;
    let x = random_batch(local, group.rank() as u64, net.spec(), size);
    let timing = if args.precision == BenchPrecision::Int8 {
        // A few images set the ranges: the float pass that records them keeps every activation,
        // which at a large batch would dwarf the int8 network's own memory in the peak.
        let few = args.batch.min(4);
        let [_, h, w, c] = x.shape();
        let sample = Tensor::from_vec([few, h, w, c], x.data()[..few * h * w * c].to_vec());
        let mut calibrator = Calibrator::new(Method::MinMax)?;
        calibrator.observe(&mut net, &sample)?;
        let mut int8 = QuantizedResNet::new(&net, &calibrator.finish(&net)?)?;
        time_steps(&args, group.as_ref(), || {
            int8.infer(&x);
        })
    } else {
        let mut rng = Rng::new(1);
        let labels: Vec<u32> = (0..local).map(|_| rng.below(net.spec().num_classes as u64) as u32).collect();
        let mut sgd = Sgd::new(SgdConfig::default());
        let mut buffers = StepBuffers::default();
        let mut buckets = (ranks > 1).then(|| GradientBuckets::new(&mut net, BUCKET_BYTES));
        time_steps(&args, group.as_ref(), || match (args.mode, &mut buckets) {
            (Mode::Train, None) => {
                train_step(&mut net, &mut sgd, &x, &labels, 0.01, 0.0, &mut buffers);
            }
            (Mode::Train, Some(buckets)) => {
                let exchange = &mut BucketExchange { buckets, comm: group.as_ref(), local, global: args.batch };
                train_step_exchanging(&mut net, &mut sgd, &x, &labels, 0.01, 0.0, &mut buffers, exchange);
            }
            (Mode::Infer, _) => {
                net.infer(&x);
            }
        })
    };
    if group.rank() != 0 {
        return Ok(());
    }
    let measured = Measured::of(&args, net.spec(), size, &timing);
    if args.json {
        print_json(&args, net.spec(), size, &measured, ranks)
    } else {
        print_text(&args, net.spec(), size, &measured, ranks);
        Ok(())
    }
}

/// The network to time, initialised, once its input and a batch of `batch` are known to fit.
fn network(args: &Args, spec: ResNetSpec, size: usize, batch: usize) -> anyhow::Result<ResNet> {
    let mut net = ResNet::new(spec.clone())?;
    net.check_input([batch, size, size, spec.in_channels])?;
    let pass = match args.mode {
        Mode::Train => Pass::Train,
        Mode::Infer => Pass::Infer,
    };
    // One input batch, made before the passes.
    let stored = KernelConfig::installed().stored();
    check_batch(BatchPlan {
        spec: &spec,
        input: (size, size),
        batch,
        pass,
        flag: "--batch",
        prefetched: 0,
        views: 1,
        stored,
    })?;
    if args.mode == Mode::Train && batch < 2 {
        bail!("training needs a batch of at least 2 per rank (batch norm statistics)");
    }
    net.init(&InitConfig::default());
    let fine_tune = FineTune { freeze: args.freeze.clone().unwrap_or_default(), ..FineTune::default() };
    resnet_train::fine_tune::freeze(&mut net, &fine_tune).map_err(anyhow::Error::msg)?;
    Ok(net)
}

/// The times of the timed steps.
struct Timing {
    /// Seconds of each step, in increasing order.
    sorted: Vec<f64>,
    /// Seconds of all of them.
    total: f64,
    /// Threads busy on average over them (where the system says).
    busy: Option<f64>,
}

/// One random batch of `batch` normalised images.
fn random_batch(batch: usize, seed: u64, spec: &ResNetSpec, size: usize) -> Tensor {
    let mut rng = Rng::new(seed);
    let len = batch * size * size * spec.in_channels;
    Tensor::from_vec([batch, size, size, spec.in_channels], (0..len).map(|_| rng.normal() as f32).collect())
}

/// Runs the warm-up steps, then times the timed steps (profiled with `--profile`), the ranks of
/// `group` starting them together.
fn time_steps(args: &Args, group: &dyn Communicator, mut step: impl FnMut()) -> Timing {
    for _ in 0..args.warmup {
        step();
    }
    group.all_reduce_sum_f64(&mut [0.0]);
    profile::reset();
    profile::enable(args.profile);
    let mut times = Vec::with_capacity(args.steps);
    let cpu_start = system::cpu_seconds();
    let start = Instant::now();
    for _ in 0..args.steps {
        let t = Instant::now();
        step();
        times.push(t.elapsed().as_secs_f64());
    }
    let total = start.elapsed().as_secs_f64();
    // Threads busy on average over the timed steps (waiting workers spin briefly, then sleep).
    let busy = cpu_start.zip(system::cpu_seconds()).map(|(a, b)| (b - a) / total);
    profile::enable(false);
    times.sort_by(|a, b| a.total_cmp(b));
    Timing { sorted: times, total, busy }
}

/// What `bench` reports.
struct Measured {
    images_per_sec: f64,
    ms_mean: f64,
    ms_median: f64,
    gflops: f64,
    peak: Option<u64>,
    busy: Option<f64>,
    /// Seconds of the timed steps.
    total: f64,
    /// `train` or `infer`.
    mode: String,
}

impl Measured {
    fn of(args: &Args, spec: &ResNetSpec, size: usize, timing: &Timing) -> Measured {
        let images_per_sec = (args.batch * args.steps) as f64 / timing.total;
        let macs = spec.summary(size, size).macs as f64;
        // Forward multiply-adds per image; a training step does about three times that work.
        let passes = if args.mode == Mode::Train { 3.0 } else { 1.0 };
        Measured {
            images_per_sec,
            ms_mean: 1e3 * timing.total / args.steps as f64,
            ms_median: 1e3 * timing.sorted[timing.sorted.len() / 2],
            gflops: 2.0 * macs * passes * images_per_sec / 1e9,
            peak: system::peak_rss_bytes(),
            busy: timing.busy,
            total: timing.total,
            mode: format!("{:?}", args.mode).to_lowercase(),
        }
    }
}

fn print_json(args: &Args, spec: &ResNetSpec, size: usize, m: &Measured, ranks: usize) -> anyhow::Result<()> {
    let mut v = serde_json::json!({
        "model": spec.name, "mode": m.mode, "batch": args.batch, "input": size, "precision": format!("{:?}", args.precision).to_lowercase(),
        "threads": threads::num_threads(), "steps": args.steps, "warmup": args.warmup,
        "images_per_sec": m.images_per_sec, "ms_per_step": m.ms_mean, "ms_per_step_median": m.ms_median,
        "gflops": m.gflops, "peak_rss_bytes": m.peak, "cpu": system::cpu_name(), "busy_threads": m.busy,
        "frozen": args.freeze.clone().unwrap_or_default(), "world_size": ranks,
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
    Ok(())
}

fn print_text(args: &Args, spec: &ResNetSpec, size: usize, m: &Measured, ranks: usize) {
    let threads = super::plural(threads::num_threads() as u64, "thread");
    println!(
        "{} {} ({}), batch {}, {size}x{size}, {}, {} after {} warm-up",
        spec.name,
        m.mode,
        format!("{:?}", args.precision).to_lowercase(),
        args.batch,
        if ranks > 1 { format!("{ranks} ranks x {threads}") } else { threads },
        super::plural(args.steps as u64, "step"),
        args.warmup
    );
    // Integer multiply-adds are operations, not floating-point ones.
    let unit = if args.precision == BenchPrecision::Int8 { "GOP/s" } else { "GFLOP/s" };
    println!(
        "  {:.1} images/s, {:.2} ms/step (median {:.2}), {:.1} {unit}",
        m.images_per_sec, m.ms_mean, m.ms_median, m.gflops
    );
    if let Some(frozen) = args.freeze.as_ref().filter(|f| !f.is_empty()) {
        println!("  frozen: {} (GFLOP/s counts a whole step's work)", frozen.join(", "));
    }
    if let Some(p) = m.peak {
        println!("  peak RSS {:.1} MiB", p as f64 / (1024.0 * 1024.0));
    }
    if let Some(b) = m.busy {
        println!("  busy threads {b:.2} of {} on average", threads::num_threads());
    }
    if args.profile {
        print_profile("operator", profile::by_operator(), args.steps, m.total);
        print_profile("layer", profile::by_layer(), args.steps, m.total);
        print_profile("layer: operator", profile::by_operator_and_layer(), args.steps, m.total);
    }
}

/// One profile table: time per step and share of the `total` seconds of `steps` steps per row,
/// and what no row accounts for.
fn print_profile(title: &str, rows: Vec<profile::Row>, steps: usize, total: f64) {
    let sum: f64 = rows.iter().map(|r| r.time.as_secs_f64()).sum();
    println!("\n  {:<28} {:>10} {:>8} {:>8}", title, "ms/step", "share", "calls");
    for r in rows {
        let secs = r.time.as_secs_f64();
        println!(
            "  {:<28} {:>10.2} {:>7.1}% {:>8}",
            r.name,
            1e3 * secs / steps as f64,
            100.0 * secs / total,
            r.calls / steps as u64
        );
    }
    println!(
        "  {:<28} {:>10.2} {:>7.1}%",
        "(unattributed)",
        1e3 * (total - sum) / steps as f64,
        100.0 * (total - sum) / total
    );
}
