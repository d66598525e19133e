//! One worker's context: its index, its view of the config, its shutdown signal and its
//! handles on the shared parts (metrics, Kafka queue, admission). Lives on one thread (`Rc`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::admission::Admission;
use crate::kafka::KafkaSender;
use crate::metrics::Metrics;
use crate::server::config::ServerConfig;
use crate::snapshot::{ConfigHub, WorkerView};
use crate::spool::SpoolAppender;

/// A single-threaded shutdown signal that any number of tasks can wait on.
#[derive(Default)]
pub struct Shutdown {
    set: Cell<bool>,
    next_id: Cell<u64>,
    wakers: RefCell<HashMap<u64, Waker>>,
}

impl Shutdown {
    /// Sets the signal and wakes every waiter.
    pub fn trigger(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = self.wakers.borrow_mut().drain().map(|(_, w)| w).collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Whether shutdown has begun.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Resolves once shutdown has begun.
    pub fn wait(&self) -> ShutdownWait<'_> {
        ShutdownWait { s: self, id: None }
    }
}

/// Future of [`Shutdown::wait`]; unregisters itself when dropped.
pub struct ShutdownWait<'a> {
    s: &'a Shutdown,
    id: Option<u64>,
}

impl Future for ShutdownWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.s.is_set() {
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = self.s.next_id.get();
                self.s.next_id.set(id + 1);
                self.id = Some(id);
                id
            }
        };
        self.s.wakers.borrow_mut().insert(id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ShutdownWait<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.s.wakers.borrow_mut().remove(&id);
        }
    }
}

/// One worker's context.
pub struct Worker {
    /// Worker index, 0-based (metrics slot).
    pub index: usize,
    /// Listener and HTTP limits (not reloadable).
    pub server: ServerConfig,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// The Kafka queue, when configured.
    pub kafka: Option<KafkaSender>,
    /// This worker's spool segments, when `[spool]` is configured.
    pub spool: Option<SpoolAppender>,
    /// Admission control (user-space shedding at accept).
    pub admission: Option<Arc<Admission>>,
    /// Where reloads are published.
    pub hub: Arc<ConfigHub>,
    view: RefCell<Rc<WorkerView>>,
    /// Shutdown signal.
    pub shutdown: Shutdown,
    /// Client connections open on this worker.
    pub connections: Cell<usize>,
    request_seq: Cell<u64>,
    id_prefix: u64,
    rng: Cell<u64>,
}

impl Worker {
    /// Creates worker `index`.
    pub fn new(
        index: usize,
        server: ServerConfig,
        metrics: Arc<Metrics>,
        kafka: Option<KafkaSender>,
        spool: Option<SpoolAppender>,
        admission: Option<Arc<Admission>>,
        hub: Arc<ConfigHub>,
    ) -> Rc<Worker> {
        let view = WorkerView::new(hub.current(), hub.generation(), index, None);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let id_prefix =
            (now.as_nanos() as u64) ^ ((std::process::id() as u64) << 32) ^ ((index as u64) << 56);
        Rc::new(Worker {
            index,
            server,
            metrics,
            kafka,
            spool,
            admission,
            hub,
            view: RefCell::new(Rc::new(view)),
            shutdown: Shutdown::default(),
            connections: Cell::new(0),
            request_seq: Cell::new(0),
            id_prefix,
            rng: Cell::new(id_prefix | 1),
        })
    }

    /// The current config view; rebuilt here (off the steady-state path) after a reload.
    /// A request keeps the `Rc` it got, so it finishes on the config it started with.
    pub fn view(&self) -> Rc<WorkerView> {
        let g = self.hub.generation();
        if self.view.borrow().generation != g {
            let old = self.view.borrow().clone();
            let v = Rc::new(WorkerView::new(
                self.hub.current(),
                g,
                self.index,
                Some(&old),
            ));
            *self.view.borrow_mut() = v;
        }
        self.view.borrow().clone()
    }

    /// True for a `rate` fraction of calls (for access-log sampling).
    pub fn sample(&self, rate: f64) -> bool {
        if rate >= 1.0 {
            return true;
        }
        let r = (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        r < rate
    }

    /// A uniformly distributed 64-bit number (xorshift64*, this worker's own state; not for
    /// secrets): access-log sampling, the weighted random side of a split.
    pub fn random_u64(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A new request id, unique per process run: 32 hex digits.
    pub fn next_request_id(&self) -> String {
        let n = self.request_seq.get() + 1;
        self.request_seq.set(n);
        format!("{:016x}{:016x}", self.id_prefix, n)
    }
}
