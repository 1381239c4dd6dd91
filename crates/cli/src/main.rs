//! `resnet`: build, train, evaluate, benchmark, import and export the networks of He et al. 2015.
//!
//! This crate is only the command line: argument parsing, progress output and glue. Everything it
//! does is a library call into the crates below it.
#![forbid(unsafe_code)]

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Cache-line-aligned large blocks: the kernels' vectors then never straddle two lines.
#[global_allocator]
static ALLOC: resnet_kernels::alloc::CacheAligned = resnet_kernels::alloc::CacheAligned;

/// Deep residual networks (He et al. 2015) on the CPU.
#[derive(Parser, Debug)]
#[command(name = "resnet", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Compute threads (default: RESNET_NUM_THREADS, else all cores).
    #[arg(long, global = true, env = "RESNET_NUM_THREADS", value_parser = commands::thread_count)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a network (no arguments: ResNet-20 on the synthetic dataset, a few minutes).
    Train(commands::train::Args),
    /// Evaluate a checkpoint: top-1/top-5 error, loss, per-class accuracy, confusion matrix.
    Eval(commands::eval::Args),
    /// The top-k classes of image files.
    Predict(commands::predict::Args),
    /// Pooled features of a layer for every image of a dataset or of image files.
    Embed(commands::embed::Args),
    /// Training curves of one or more runs in one figure.
    Plot(commands::plot::Args),
    /// Run one of the paper's experiments.
    #[command(subcommand)]
    Experiment(commands::experiment::Experiment),
    /// List the networks of the zoo.
    Models(commands::models::Args),
    /// Show a network's stage table, parameter count and multiply-adds.
    Info(commands::info::Args),
    /// Measure training or inference throughput on random data.
    Bench(commands::bench::Args),
    /// Show a dataset's splits, classes, image size and channel statistics.
    Data(commands::data::Args),
    /// Download a public dataset (cifar10, mnist, ...) or torchvision's ImageNet weights
    /// (weights resnet50, ...), checksum-verified.
    Download(commands::download::Args),
    /// Import torchvision weights (.safetensors or .pth) into a checkpoint.
    Import(commands::import::Args),
    /// Export a checkpoint to ONNX or to torchvision's safetensors layout.
    Export(commands::export::Args),
    /// Quantize a checkpoint to int8 (post-training, calibrated on a sample of a dataset).
    Quantize(commands::quantize::Args),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a closed pipe (`resnet info X | head -1`) would panic;
    // with the default action the process ends silently, as every Unix tool does.
    sigpipe::reset();
    let cli = Cli::parse();
    // The kernels' environment switches are read here, once; `--threads` (or its variable,
    // through clap) overrides the thread count.
    let kernels = resnet_kernels::KernelConfig::from_env()
        .map(|k| resnet_kernels::KernelConfig { threads: cli.threads.or(k.threads), ..k })
        .and_then(|k| k.install());
    if let Err(e) = kernels {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Train(a) => commands::train::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Predict(a) => commands::predict::run(a),
        Command::Embed(a) => commands::embed::run(a),
        Command::Plot(a) => commands::plot::run(a),
        Command::Experiment(e) => commands::experiment::run(e),
        Command::Models(a) => commands::models::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Data(a) => commands::data::run(a),
        Command::Download(a) => commands::download::run(a),
        Command::Import(a) => commands::import::run(a),
        Command::Export(a) => commands::export::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
