//! A lane's request queue: many senders (the sessions, on any worker thread), one receiver
//! (the lane task).
//!
//! Every request a client sends to a node goes through one, so it is kept to what a lane
//! needs: a lock around a list of fixed-size chunks (see [`CHUNK`]), and a wake-up only when
//! the lane waits on an empty queue. A send is one uncontended lock and a push; a lane that
//! is already running or scheduled (the common case under load, when a turn's sessions queue
//! many requests before it runs) is not woken again for each. The lane takes what is queued in one lock
//! ([`Receiver::recv_many`], [`Receiver::try_recv_many`]) and may leave requests queued while
//! it holds its connection's input (see `Sending::takes_more` in the lane).
//!
//! The semantics are those of an unbounded channel: requests come out in the order they were
//! sent; once every sender is gone and the queue is empty, receiving returns nothing; once the
//! receiver is closed or dropped, a send hands the request back.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Items per chunk of the queue. A queue holds whole chunks, not one array grown by
/// doubling: its memory follows what is queued (a backlog of 16,000 requests, 1,000
/// pipelining clients' worth, takes ~1.7 MB, not up to twice that) and goes back as the
/// chunks empty.
const CHUNK: usize = 32;

/// Room for this many chunks' addresses is kept when the queue empties; more (after a
/// backlog) is given back.
const KEEP_CHUNKS: usize = 64;

/// The state senders and the receiver share.
#[derive(Debug)]
struct Shared<T> {
    /// Everything, behind one lock: a send or a take is a few moves, and the lane's side
    /// takes many requests per lock.
    inner: Mutex<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    /// Sent and not yet received, oldest first, in chunks of 1 to [`CHUNK`] items (only the
    /// last one may be partly filled, the first partly drained; an emptied chunk leaves at
    /// once, so the queue is empty exactly when this is).
    chunks: VecDeque<VecDeque<T>>,
    /// A chunk that was emptied, kept for the next one needed: a queue that fills and
    /// empties by the chunk allocates nothing.
    spare: Option<VecDeque<T>>,
    /// The receiver's task while it waits on an empty queue: the next send wakes it (and
    /// takes it, so the sends after that one wake nothing until the receiver waits again).
    waker: Option<Waker>,
    /// Live senders; at 0 the receiver, once the queue is empty, learns that no more will
    /// come.
    senders: usize,
    /// The receiver closed the queue or is gone: sends are refused.
    closed: bool,
}

impl<T> Inner<T> {
    /// Appends `item`, in the last chunk or a new one (the spare if there is one).
    fn push(&mut self, item: T) {
        match self.chunks.back_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push_back(item),
            _ => {
                let mut chunk = self
                    .spare
                    .take()
                    .unwrap_or_else(|| VecDeque::with_capacity(CHUNK));
                chunk.push_back(item);
                self.chunks.push_back(chunk);
            }
        }
    }

    /// Moves up to `limit` items to `buf`; returns how many.
    fn drain_to(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        let mut moved = 0;
        while moved < limit {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = (limit - moved).min(front.len());
            buf.extend(front.drain(..n));
            moved += n;
            if front.is_empty() {
                self.retire_front();
            }
        }
        moved
    }

    /// The oldest item.
    fn pop(&mut self) -> Option<T> {
        let front = self.chunks.front_mut()?;
        let item = front.pop_front();
        if front.is_empty() {
            self.retire_front();
        }
        item
    }

    /// Drops the emptied front chunk, or keeps it as the spare.
    fn retire_front(&mut self) {
        if let Some(chunk) = self.chunks.pop_front() {
            if self.spare.is_none() {
                self.spare = Some(chunk);
            }
        }
        if self.chunks.is_empty() && self.chunks.capacity() > KEEP_CHUNKS {
            self.chunks = VecDeque::new();
        }
    }
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // A panic while holding the lock leaves the queue consistent (each operation is a
        // push, a drain or a flag), so a poisoned lock is used as it is.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A new queue's two ends.
#[must_use]
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            chunks: VecDeque::new(),
            spare: None,
            waker: None,
            senders: 1,
            closed: false,
        }),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver { shared },
    )
}

/// The sending end; cloned for every holder of a lane's handle.
#[derive(Debug)]
pub struct Sender<T> {
    /// The queue, shared with the receiver and the other senders.
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item`, waking the receiver if it waits on an empty queue.
    ///
    /// # Errors
    /// Hands `item` back when the receiver is closed or gone.
    pub fn send(&self, item: T) -> Result<(), T> {
        let mut inner = self.shared.lock();
        if inner.closed {
            return Err(item);
        }
        inner.push(item);
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the receiver is closed or gone (sends are refused).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.senders -= 1;
        let waker = if inner.senders == 0 {
            inner.waker.take()
        } else {
            None
        };
        drop(inner);
        // The last one: a receiver waiting on the empty queue learns that nothing more comes.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving end, owned by the lane task.
#[derive(Debug)]
pub struct Receiver<T> {
    /// The queue, shared with the senders.
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// Moves up to `limit` queued items to `buf`, waiting for one if none is queued. Returns
    /// how many were moved: 0 only when every sender is gone and nothing is queued (or
    /// `limit` is 0).
    pub async fn recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        poll_fn(|cx| self.poll_take(cx, |inner| inner.drain_to(buf, limit), 0)).await
    }

    /// The next item, waiting for one if none is queued; `None` once every sender is gone and
    /// nothing is queued.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_take(cx, Inner::pop, None)).await
    }

    /// `take` from a queue that holds something; `gone` once every sender is gone and
    /// nothing is queued; else waits (the next send wakes `cx`'s task).
    fn poll_take<R>(
        &self,
        cx: &mut Context<'_>,
        take: impl FnOnce(&mut Inner<T>) -> R,
        gone: R,
    ) -> Poll<R> {
        let mut inner = self.shared.lock();
        if !inner.chunks.is_empty() {
            return Poll::Ready(take(&mut inner));
        }
        if inner.senders == 0 {
            return Poll::Ready(gone);
        }
        match &mut inner.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Moves up to `limit` queued items to `buf` without waiting; returns how many.
    pub fn try_recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        self.shared.lock().drain_to(buf, limit)
    }

    /// The next queued item, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        self.shared.lock().pop()
    }

    /// Refuses every send from now on; what is queued can still be received.
    pub fn close(&mut self) {
        self.shared.lock().closed = true;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.closed = true;
        inner.waker = None;
        let items = (std::mem::take(&mut inner.chunks), inner.spare.take());
        drop(inner);
        // Dropped outside the lock: an item's drop may send to another queue.
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    /// Counts its wake-ups.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_many<T>(rx: &mut Receiver<T>, buf: &mut Vec<T>, waker: &Waker) -> Poll<usize> {
        let fut = rx.recv_many(buf, 8);
        let mut fut = std::pin::pin!(fut);
        fut.as_mut().poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn items_come_out_in_order_and_in_batches_of_at_most_the_limit() {
        let (tx, mut rx) = channel();
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        let counter = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut buf = Vec::new();
        assert_eq!(poll_many(&mut rx, &mut buf, &waker), Poll::Ready(8));
        assert_eq!(rx.try_recv_many(&mut buf, 8), 2);
        assert_eq!(buf, (0..10).collect::<Vec<_>>());
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn a_waiting_receiver_is_woken_once_by_the_sends_that_follow() {
        let (tx, mut rx) = channel();
        let counter = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut buf = Vec::new();
        assert_eq!(poll_many(&mut rx, &mut buf, &waker), Poll::Pending);
        for i in 0..3 {
            tx.send(i).unwrap();
        }
        // Scheduled by the first send; the next two found it already woken.
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_many(&mut rx, &mut buf, &waker), Poll::Ready(3));
        // Not waiting (it did not find the queue empty): a send wakes nothing.
        tx.send(3).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_recv(), Some(3));
    }

    #[test]
    fn the_receiver_learns_when_every_sender_is_gone_after_what_they_sent() {
        let (tx, mut rx) = channel();
        let other = tx.clone();
        let counter = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut buf = Vec::new();
        tx.send(1).unwrap();
        drop(tx);
        assert_eq!(poll_many(&mut rx, &mut buf, &waker), Poll::Ready(1));
        assert_eq!(poll_many(&mut rx, &mut buf, &waker), Poll::Pending);
        drop(other);
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the last sender's drop wakes it"
        );
        assert_eq!(poll_many(&mut rx, &mut buf, &waker), Poll::Ready(0));
    }

    #[test]
    fn a_closed_or_dropped_receiver_hands_sends_back_and_drops_what_was_queued() {
        let (tx, mut rx) = channel();
        let queued = Arc::new(());
        tx.send(Arc::clone(&queued)).unwrap();
        rx.close();
        assert!(tx.is_closed());
        assert!(tx.send(Arc::new(())).is_err());
        // Still receivable after close.
        assert!(rx.try_recv().is_some());
        tx.send(Arc::clone(&queued)).unwrap_err();
        let (tx, rx) = channel();
        tx.send(Arc::clone(&queued)).unwrap();
        assert_eq!(Arc::strong_count(&queued), 2);
        drop(rx);
        assert_eq!(
            Arc::strong_count(&queued),
            1,
            "queued items dropped with the receiver"
        );
        assert!(tx.send(Arc::clone(&queued)).is_err());
    }

    #[test]
    fn a_backlog_s_memory_follows_what_is_queued() {
        let (tx, mut rx) = channel();
        let mut buf = Vec::new();
        for i in 0..10_000 {
            tx.send(i).unwrap();
        }
        let room = |rx: &Receiver<i32>| {
            let inner = rx.shared.lock();
            let items: usize = inner.chunks.iter().map(VecDeque::capacity).sum();
            let queued: usize = inner.chunks.iter().map(VecDeque::len).sum();
            (items, inner.chunks.len(), queued)
        };
        // Whole chunks, no doubling: the room is what is queued, rounded up to a chunk.
        assert_eq!(room(&rx), (10_016, 313, 10_000));
        assert_eq!(rx.try_recv_many(&mut buf, 9_990), 9_990);
        assert_eq!(room(&rx).0, CHUNK);
        assert_eq!(buf, (0..9_990).collect::<Vec<_>>());
        buf.clear();
        while rx.try_recv_many(&mut buf, 3) > 0 {}
        assert_eq!(buf, (9_990..10_000).collect::<Vec<_>>());
        let inner = rx.shared.lock();
        assert!(inner.chunks.is_empty());
        assert!(inner.chunks.capacity() <= KEEP_CHUNKS);
        assert!(
            inner.spare.is_some(),
            "one emptied chunk kept for the next sends"
        );
    }

    #[test]
    fn items_come_out_in_order_across_chunks_one_by_one() {
        let (tx, mut rx) = channel();
        for i in 0..100 {
            tx.send(i).unwrap();
        }
        let mut got = Vec::new();
        while let Some(i) = rx.try_recv() {
            got.push(i);
            if i % 7 == 0 {
                tx.send(1000 + i).unwrap();
            }
        }
        let mut want: Vec<_> = (0..100).collect();
        want.extend((0..100).filter(|i| i % 7 == 0).map(|i| 1000 + i));
        assert_eq!(got, want);
        assert!(rx.shared.lock().chunks.is_empty());
    }

    #[tokio::test]
    async fn recv_waits_for_one_item_then_learns_when_the_senders_are_gone() {
        let (tx, mut rx) = channel();
        let sender = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(7).unwrap();
            tx.send(8).unwrap();
        });
        assert_eq!(rx.recv().await, Some(7));
        sender.await.unwrap();
        assert_eq!(rx.recv().await, Some(8));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn senders_on_other_threads_reach_a_waiting_receiver() {
        let (tx, mut rx) = channel();
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..1000 {
                        tx.send((t, i)).unwrap();
                        if i % 100 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut got = Vec::new();
        let mut buf = Vec::new();
        while rx.recv_many(&mut buf, 64).await > 0 {
            got.append(&mut buf);
        }
        for s in senders {
            s.await.unwrap();
        }
        assert_eq!(got.len(), 4000);
        // Each sender's items in its order.
        for t in 0..4 {
            let mine: Vec<_> = got
                .iter()
                .filter(|(s, _)| *s == t)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(mine, (0..1000).collect::<Vec<_>>());
        }
    }
}
