//! The loader: batches of augmented, normalised `f32` NHWC tensors, built on worker threads ahead
//! of the training step.
//!
//! Determinism: batch `b` of epoch `e` is a pure function of `(seed, e, b)`. The sample order of
//! an epoch comes from a generator derived from `(seed, e)`, and each sample's augmentation from
//! one derived from `(seed, e, dataset index)`; workers only decide *when* a piece is computed,
//! never what it contains, and pieces are assembled by position.

use crate::augment::{EvalView, TrainAugment};
use crate::normalize::Normalize;
use crate::{DataError, Shard, SharedDataset};
use resnet_kernels::rng::Rng;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Stream tags: epoch shuffles and per-sample augmentation draw from unrelated generators.
const SHUFFLE_TAG: u64 = 0x5A0F_F1E5;
const AUGMENT_TAG: u64 = 0xA0C3_E471;

/// Training (random augmentation) or evaluation (fixed views).
#[derive(Clone, Debug)]
pub enum LoaderMode {
    /// Random augmentation, one view per sample.
    Train(TrainAugment),
    /// Fixed views, possibly several per sample.
    Eval(EvalView),
}

/// How a [`Loader`] batches a dataset.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle the samples every epoch.
    pub shuffle: bool,
    /// Drop the last, incomplete batch of an epoch.
    pub drop_last: bool,
    /// Seed of the shuffles and augmentations.
    pub seed: u64,
    /// Worker threads (0: build each batch on the calling thread when it is asked for).
    pub workers: usize,
    /// Batches built ahead of the one being consumed (at least 1 is used).
    pub prefetch: usize,
    /// Augmentation or evaluation views.
    pub mode: LoaderMode,
    /// Input normalisation.
    pub normalize: Normalize,
    /// The part of every batch this loader yields (data-parallel ranks; [`Shard::WHOLE`]
    /// otherwise). Batches are counted as whole batches either way.
    pub shard: Shard,
}

/// One batch.
///
/// # Shapes
/// `images` is NHWC `[n * views, h, w, c]` (`shape`); the views of sample `i` are rows
/// `i * views .. (i + 1) * views`. `labels` and `indices` have `n` entries.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Normalised pixels.
    pub images: Vec<f32>,
    /// `[n * views, h, w, c]`.
    pub shape: [usize; 4],
    /// Views per sample (1 in training).
    pub views: usize,
    /// Class of each sample.
    pub labels: Vec<u32>,
    /// Dataset index of each sample.
    pub indices: Vec<usize>,
}

/// Turns a dataset into batches (see the module documentation for the determinism guarantee).
pub struct Loader {
    ds: SharedDataset,
    cfg: Arc<LoaderConfig>,
    out: (usize, usize, usize),
    views: usize,
}

impl Loader {
    /// A loader of `ds` with `cfg`.
    ///
    /// # Errors
    /// [`DataError::Config`] when the configuration does not fit the dataset: an empty dataset or
    /// batch, a crop larger than its resized side, a mode that needs images of one size on a
    /// dataset whose sizes differ, PCA colour on grey images, statistics of the wrong size, or
    /// `drop_last` with fewer samples than a batch.
    pub fn new(ds: SharedDataset, cfg: LoaderConfig) -> Result<Self, DataError> {
        if cfg.batch_size == 0 {
            return Err(DataError::config("loader: batch_size", "must be at least 1"));
        }
        if ds.is_empty() {
            return Err(DataError::config("loader", "the dataset has no samples"));
        }
        let c = ds.channels();
        let ((h, w), views) = match &cfg.mode {
            LoaderMode::Train(a) => (a.output_size(ds.image_size(), c)?, 1),
            LoaderMode::Eval(v) => (v.output_size(ds.image_size())?, v.views()),
        };
        cfg.normalize.check((h, w, c))?;
        if cfg.drop_last && ds.len() < cfg.batch_size {
            return Err(DataError::config(
                "loader: drop_last",
                format!("{} samples make no full batch of {}", ds.len(), cfg.batch_size),
            ));
        }
        let Shard { index, count } = cfg.shard;
        if index >= count {
            return Err(DataError::config("loader: shard", format!("there is no part {index} of {count}")));
        }
        // The smallest batch an epoch has: every part of it must hold a sample.
        let (n, bs) = (ds.len(), cfg.batch_size);
        let smallest = if cfg.drop_last || n.is_multiple_of(bs) { bs.min(n) } else { n % bs };
        if smallest < count {
            return Err(DataError::config(
                "loader: shard",
                format!(
                    "a batch of {smallest} (the last of {n} samples in batches of {bs}) gives some of the {count} parts \
                     none: choose a batch size that leaves at least {count} in every batch"
                ),
            ));
        }
        Ok(Self { ds, cfg: Arc::new(cfg), out: (h, w, c), views })
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.ds.len();
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    /// `(h, w, c)` of one view.
    pub fn output_shape(&self) -> (usize, usize, usize) {
        self.out
    }

    /// Views per sample.
    pub fn views(&self) -> usize {
        self.views
    }

    /// Samples in the dataset.
    pub fn len(&self) -> usize {
        self.ds.len()
    }

    /// True when the dataset has no sample (never, for a constructed loader).
    pub fn is_empty(&self) -> bool {
        self.ds.is_empty()
    }

    /// The dataset.
    pub fn dataset(&self) -> &SharedDataset {
        &self.ds
    }

    /// The configuration.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Batches `start_batch..` of epoch `epoch` (a resumed run passes the batch it stopped at).
    /// Workers start at once and build up to `prefetch` batches ahead.
    pub fn epoch(&self, epoch: u64, start_batch: usize) -> EpochIter {
        let n = self.ds.len();
        let mut order: Vec<usize> = (0..n).collect();
        if self.cfg.shuffle {
            Rng::derive(self.cfg.seed, &[SHUFFLE_TAG, epoch]).shuffle(&mut order);
        }
        let end = self.batches_per_epoch();
        let start = start_batch.min(end);
        let workers = self.cfg.workers;
        // With at least as many batches in flight as workers, each worker builds whole batches
        // and a batch is its worker's buffer, not a copy. With fewer, batches are split so that
        // every worker still has work.
        let window = self.cfg.prefetch.max(1);
        let chunk = self.cfg.batch_size.div_ceil(workers.div_ceil(window).max(1));
        let plan = Arc::new(Plan {
            ds: self.ds.clone(),
            cfg: self.cfg.clone(),
            out: self.out,
            views: self.views,
            epoch,
            order,
            chunk,
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_batch: start,
                next_chunk: 0,
                yielded: start,
                live: workers,
                pending: HashMap::new(),
                ready: HashMap::new(),
            }),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            window,
            end,
        });
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let (plan, shared2) = (plan.clone(), shared.clone());
            match std::thread::Builder::new().name(format!("resnet-loader-{i}")).spawn(move || worker(&plan, &shared2))
            {
                Ok(h) => handles.push(h),
                Err(_) => {
                    // Fewer threads only slow the epoch down; its content does not change.
                    shared.lock().live -= 1;
                }
            }
        }
        let inline = handles.is_empty();
        EpochIter { plan, shared, handles, next: start, inline }
    }
}

/// Everything a worker needs to build any piece of one epoch.
struct Plan {
    ds: SharedDataset,
    cfg: Arc<LoaderConfig>,
    out: (usize, usize, usize),
    views: usize,
    epoch: u64,
    order: Vec<usize>,
    chunk: usize,
}

impl Plan {
    /// Positions in `order` of this shard's part of batch `b`.
    fn batch(&self, b: usize) -> std::ops::Range<usize> {
        let bs = self.cfg.batch_size;
        self.cfg.shard.part(b * bs..((b + 1) * bs).min(self.order.len()))
    }

    fn chunks(&self, b: usize) -> usize {
        self.batch(b).len().div_ceil(self.chunk)
    }

    /// Renders chunk `k` of batch `b`: the samples' views, normalised, back to back.
    fn render_chunk(&self, b: usize, k: usize, stop: &AtomicBool) -> Result<Vec<f32>, DataError> {
        let r = self.batch(b);
        let from = r.start + k * self.chunk;
        let to = (from + self.chunk).min(r.end);
        let (h, w, c) = self.out;
        let per = self.views * h * w * c;
        let mut out = vec![0f32; (to - from) * per];
        for (p, dst) in (from..to).zip(out.chunks_exact_mut(per)) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let idx = self.order[p];
            let img = self.ds.load(idx)?;
            let res = match &self.cfg.mode {
                LoaderMode::Train(a) => {
                    let mut rng = Rng::derive(self.cfg.seed, &[AUGMENT_TAG, self.epoch, idx as u64]);
                    a.render(&img, &mut rng, &self.cfg.normalize, self.out, dst)
                }
                LoaderMode::Eval(v) => v.render(&img, &self.cfg.normalize, self.out, dst),
            };
            res.map_err(|reason| DataError::Inconsistent { what: self.ds.describe(idx), reason })?;
        }
        Ok(out)
    }

    /// Renders a chunk, turning a panic (a bug in a dataset or here) into an error of the batch
    /// rather than a loader that waits for ever.
    fn render_chunk_caught(&self, b: usize, k: usize, stop: &AtomicBool) -> Result<Vec<f32>, DataError> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.render_chunk(b, k, stop))).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(DataError::Worker { epoch: self.epoch, batch: b, reason: format!("panicked: {msg}") })
        })
    }

    /// Joins the chunks of batch `b` (in chunk order; the first failed chunk's error wins).
    fn assemble(&self, b: usize, parts: Vec<Option<Result<Vec<f32>, DataError>>>) -> Result<Batch, DataError> {
        let r = self.batch(b);
        let (h, w, c) = self.out;
        let mut images = Vec::new();
        for p in parts {
            match p {
                // A batch of one chunk keeps its buffer.
                Some(Ok(v)) if images.is_empty() => images = v,
                Some(Ok(v)) => images.extend_from_slice(&v),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(DataError::Worker { epoch: self.epoch, batch: b, reason: "a chunk is missing".into() })
                }
            }
        }
        debug_assert_eq!(images.len(), r.len() * self.views * h * w * c);
        let indices: Vec<usize> = self.order[r.clone()].to_vec();
        let labels = indices.iter().map(|&i| self.ds.label(i)).collect();
        Ok(Batch { images, shape: [r.len() * self.views, h, w, c], views: self.views, labels, indices })
    }

    fn build_inline(&self, b: usize) -> Result<Batch, DataError> {
        let never = AtomicBool::new(false);
        let parts = (0..self.chunks(b)).map(|k| Some(self.render_chunk_caught(b, k, &never))).collect();
        self.assemble(b, parts)
    }
}

/// Chunks of one batch as they arrive.
struct Pending {
    parts: Vec<Option<Result<Vec<f32>, DataError>>>,
    left: usize,
}

struct State {
    /// The next chunk to hand out: (batch, chunk).
    next_batch: usize,
    next_chunk: usize,
    /// The next batch the consumer takes.
    yielded: usize,
    /// Workers still running.
    live: usize,
    pending: HashMap<usize, Pending>,
    ready: HashMap<usize, Result<Batch, DataError>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a batch is ready, when the consumer takes one, and on stop.
    cv: Condvar,
    stop: AtomicBool,
    window: usize,
    end: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only touched by short, panic-free sections: a poisoned lock still holds
        // consistent data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks a worker gone however it exits, so that the consumer never waits for a dead thread.
struct LiveGuard<'a>(&'a Shared);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().live -= 1;
        self.0.cv.notify_all();
    }
}

fn worker(plan: &Plan, shared: &Shared) {
    let _guard = LiveGuard(shared);
    loop {
        let (b, k) = {
            let mut g = shared.lock();
            loop {
                if shared.stop.load(Ordering::Relaxed) || g.next_batch >= shared.end {
                    return;
                }
                if g.next_batch < g.yielded + shared.window {
                    break;
                }
                g = shared.wait(g);
            }
            let job = (g.next_batch, g.next_chunk);
            g.next_chunk += 1;
            if g.next_chunk == plan.chunks(g.next_batch) {
                g.next_batch += 1;
                g.next_chunk = 0;
            }
            job
        };
        let part = plan.render_chunk_caught(b, k, &shared.stop);
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let done = {
            let mut g = shared.lock();
            let n = plan.chunks(b);
            let p = g.pending.entry(b).or_insert_with(|| Pending { parts: (0..n).map(|_| None).collect(), left: n });
            p.parts[k] = Some(part);
            p.left -= 1;
            if p.left == 0 {
                g.pending.remove(&b)
            } else {
                None
            }
        };
        if let Some(p) = done {
            let batch = plan.assemble(b, p.parts);
            shared.lock().ready.insert(b, batch);
            shared.cv.notify_all();
        }
    }
}

/// The batches of one epoch, in order. Dropping it stops and joins the workers (they finish at
/// most the sample each is on).
pub struct EpochIter {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    inline: bool,
}

impl EpochIter {
    /// The index of the batch the next call to `next` returns.
    pub fn next_batch(&self) -> usize {
        self.next
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.next;
        if b >= self.shared.end {
            return None;
        }
        self.next += 1;
        if self.inline {
            return Some(self.plan.build_inline(b));
        }
        let mut g = self.shared.lock();
        loop {
            if let Some(r) = g.ready.remove(&b) {
                g.yielded = b + 1;
                drop(g);
                self.shared.cv.notify_all();
                return Some(r);
            }
            if g.live == 0 {
                // Every worker is gone (a panic outside the caught section): build it here.
                drop(g);
                return Some(self.plan.build_inline(b));
            }
            g = self.shared.wait(g);
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.shared.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochIter {}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.cv.notify_all();
        for h in self.handles.drain(..) {
            // A worker's panic was already reported through its batch; nothing to add here.
            let _ = h.join();
        }
    }
}
