//! One worker's connections to one upstream's nodes: idle keep-alive connections to reuse, and
//! a bound on how many are open per node (idle and busy together). A request that finds every
//! connection busy waits, up to the queue timeout, for one to come back or close.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::stream::UpstreamStream;

struct Idle {
    stream: UpstreamStream,
    since: Instant,
}

#[derive(Default)]
struct NodeSlots {
    idle: Vec<Idle>,
    /// Connections open to this node (idle + busy + connecting).
    open: usize,
    waiters: VecDeque<Waker>,
}

/// What a checkout got: a pooled connection, or a reserved slot to connect with.
pub enum Checkout {
    /// An idle connection, still within the pool idle timeout.
    Idle(UpstreamStream),
    /// A slot for a new connection: connect, then [`Pool::checkin`] or [`Pool::release`].
    Connect,
}

/// The per-worker pool of one upstream.
pub struct Pool {
    nodes: RefCell<Vec<NodeSlots>>,
    max_idle: usize,
    max_open: usize,
    idle_timeout: Duration,
}

/// Counts a checkout that dropped idle connections past their age (for the open gauge).
pub struct Expired(pub usize);

impl Pool {
    /// A pool for `nodes` nodes.
    pub fn new(nodes: usize, max_idle: usize, max_open: usize, idle_timeout: Duration) -> Pool {
        Pool {
            nodes: RefCell::new((0..nodes).map(|_| NodeSlots::default()).collect()),
            max_idle,
            max_open,
            idle_timeout,
        }
    }

    /// An idle connection or a new slot, without waiting. `fresh`: never reuse an idle one.
    pub fn try_checkout(&self, node: usize, fresh: bool) -> (Option<Checkout>, Expired) {
        let mut nodes = self.nodes.borrow_mut();
        let n = &mut nodes[node];
        let mut expired = 0;
        if !fresh {
            while let Some(idle) = n.idle.pop() {
                if idle.since.elapsed() < self.idle_timeout {
                    return (Some(Checkout::Idle(idle.stream)), Expired(expired));
                }
                n.open -= 1;
                expired += 1;
            }
        } else if n.open >= self.max_open {
            // A fresh connection is wanted and the node is full: close an idle one for room.
            if n.idle.pop().is_some() {
                n.open -= 1;
                expired += 1;
            }
        }
        if n.open < self.max_open {
            n.open += 1;
            return (Some(Checkout::Connect), Expired(expired));
        }
        (None, Expired(expired))
    }

    /// Waits (without a deadline: wrap it in a timeout) for an idle connection or a slot.
    pub fn checkout(&self, node: usize, fresh: bool) -> CheckoutWait<'_> {
        CheckoutWait {
            pool: self,
            node,
            fresh,
            expired: 0,
        }
    }

    /// Returns a healthy connection for reuse. Returns false when it was closed instead
    /// (the idle list is full).
    pub fn checkin(&self, node: usize, stream: UpstreamStream) -> bool {
        let mut nodes = self.nodes.borrow_mut();
        let n = &mut nodes[node];
        let kept = n.idle.len() < self.max_idle;
        if kept {
            n.idle.push(Idle {
                stream,
                since: Instant::now(),
            });
        } else {
            n.open -= 1;
        }
        // Every waiter retries (a woken waiter may have timed out meanwhile; none is lost).
        for w in n.waiters.drain(..) {
            w.wake();
        }
        kept
    }

    /// A connection (or a reserved slot) is gone: frees its slot.
    pub fn release(&self, node: usize) {
        let mut nodes = self.nodes.borrow_mut();
        let n = &mut nodes[node];
        n.open -= 1;
        // Every waiter retries (a woken waiter may have timed out meanwhile; none is lost).
        for w in n.waiters.drain(..) {
            w.wake();
        }
    }

    /// Closes every idle connection to `node` (its address changed); returns how many.
    pub fn drain_idle(&self, node: usize) -> usize {
        let mut nodes = self.nodes.borrow_mut();
        let n = &mut nodes[node];
        let k = n.idle.len();
        n.idle.clear();
        n.open -= k;
        for w in n.waiters.drain(..) {
            w.wake();
        }
        k
    }

    /// Idle connections (all nodes).
    pub fn idle_count(&self) -> usize {
        self.nodes.borrow().iter().map(|n| n.idle.len()).sum()
    }
}

/// The future of [`Pool::checkout`]; resolves to the checkout and how many expired idle
/// connections it closed on the way.
pub struct CheckoutWait<'a> {
    pool: &'a Pool,
    node: usize,
    fresh: bool,
    expired: usize,
}

impl Future for CheckoutWait<'_> {
    type Output = (Checkout, usize);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (got, Expired(e)) = self.pool.try_checkout(self.node, self.fresh);
        self.expired += e;
        match got {
            Some(c) => Poll::Ready((c, self.expired)),
            None => {
                self.pool.nodes.borrow_mut()[self.node]
                    .waiters
                    .push_back(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
