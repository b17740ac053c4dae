//! Busy polling (`busy_poll_us`): the worker keeps polling for work for a while after it ran
//! out, instead of going to sleep at once.
//!
//! Why: on a virtual machine, a CPU with nothing to run halts, and waking the thread that
//! sleeps on it (a client's request or a node's reply arrived) costs tens of microseconds
//! before it runs again: an exit to the hypervisor and an interrupt. A proxy that serves
//! requests faster than the nodes and clients around it runs out of work many times per
//! batch (3–4 times per 1,000 requests at `-P 16` on the 2-core VM of `benches/`), and
//! each time its CPU idles and the wake-up is paid. Polling for up to `busy_poll_us` after
//! the last work keeps the CPU busy and the thread running, so the next request is read at
//! once. The price is CPU time: while requests keep coming less than `busy_poll_us` apart,
//! the worker polls between them rather than sleeping (HAProxy's `busy-polling` and the
//! kernel's `net.core.busy_poll` make the same trade, and are off by default too).
//!
//! How: with one worker thread (tokio's single-threaded scheduler), a task of its own
//! ([`spinner`]) that does nothing but let itself be woken. When the scheduler runs out of
//! tasks it calls [`on_park`] before it sleeps; while polling, that wakes the spinner, so the
//! scheduler polls its I/O driver without blocking (an `epoll_wait` with no timeout) and runs
//! whatever it brought, instead of sleeping, and comes back to [`on_park`] when it runs out
//! again. Each round also yields the CPU to any other thread that wants it
//! (`sched_yield`), so polling never delays another process on the same CPU. The spinner is
//! the first task a round runs (it was woken before the driver was polled), so the time from
//! its poll to the scheduler running out again is what the round's other tasks took: a round
//! that ran nothing else found no work. After `busy_poll_us` of such rounds, the worker sleeps
//! as before.
//! With several worker threads (tokio's work-stealing scheduler, which may run the spinner
//! on any of them) busy polling is not applied.
//!
//! States of a worker (the [`Phase`] enum; the diagram is in `LIFECYCLE.md` beside this
//! file):
//!
//! - **Working**: running tasks, before it first ran out of work or after it woke from a
//!   sleep. Out of work → Polling since then.
//! - **Polling** since an instant: it ran out of work then, after doing some, and every round
//!   since ran nothing but the spinner. A round that did work → Polling since the instant it
//!   runs out again (the window starts over); `busy_poll_us` since the instant → Sleeping.
//! - **Sleeping**: blocked in the I/O driver until something happens; then Working.

use std::cell::RefCell;
use std::future::Future;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// A polling round whose tasks after the spinner ran for at least this long did work: a
/// client's request or a node's reply (a socket read or write alone takes a microsecond or
/// more). Nothing after the spinner takes a few hundred nanoseconds, a debug build included.
const WORK: Duration = Duration::from_micros(5);

/// Where the worker thread is in its cycle (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Running tasks.
    Working,
    /// Out of work since the instant, polling for more.
    Polling(Instant),
    /// Asleep in the I/O driver.
    Sleeping,
}

/// One worker thread's busy polling.
#[derive(Debug)]
pub(crate) struct Poller {
    /// How long it polls after running out of work (`busy_poll_us`); zero: never.
    window: Duration,
    /// Where it is in its cycle.
    phase: Phase,
    /// When the spinner last ran: the first task of a polling round, so the time from then to
    /// running out again is how long the round's other tasks ran.
    spun: Instant,
    /// The spinner task's waker, once it ran.
    spinner: Option<Waker>,
}

impl Poller {
    fn new(window: Duration, now: Instant) -> Self {
        Self {
            window,
            phase: Phase::Working,
            spun: now,
            spinner: None,
        }
    }

    /// The scheduler ran out of tasks at `now`: whether it should poll once more instead of
    /// sleeping.
    pub(crate) fn out_of_work(&mut self, now: Instant) -> bool {
        if self.window.is_zero() || self.spinner.is_none() {
            self.phase = Phase::Sleeping;
            return false;
        }
        let worked = now.saturating_duration_since(self.spun) >= WORK;
        self.phase = match self.phase {
            Phase::Polling(since) if !worked => {
                if now.saturating_duration_since(since) >= self.window {
                    Phase::Sleeping
                } else {
                    Phase::Polling(since)
                }
            }
            Phase::Working | Phase::Sleeping | Phase::Polling(_) => Phase::Polling(now),
        };
        matches!(self.phase, Phase::Polling(_))
    }

    /// The scheduler came back from its I/O driver (slept or polled).
    pub(crate) fn resumed(&mut self) {
        if self.phase == Phase::Sleeping {
            self.phase = Phase::Working;
        }
    }

    /// The spinner runs at `now`: a polling round starts its tasks.
    pub(crate) fn spun(&mut self, now: Instant) {
        self.spun = now;
    }

    /// Where it is now.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }
}

thread_local! {
    /// The busy polling of the worker thread this runs on: off until [`spinner`] runs on it.
    static POLLER: RefCell<Poller> = RefCell::new(Poller::new(Duration::ZERO, Instant::now()));
}

/// The runtime's `on_thread_park` hook: the worker ran out of tasks. While it polls, wakes
/// the spinner (so the scheduler polls its driver instead of sleeping) and yields the CPU to
/// any other thread that is ready to run.
pub fn on_park() {
    let poll = POLLER.with(|poller| {
        let mut poller = poller.borrow_mut();
        let poll = poller.out_of_work(Instant::now());
        if poll {
            if let Some(spinner) = &poller.spinner {
                spinner.wake_by_ref();
            }
        }
        poll
    });
    if poll {
        std::thread::yield_now();
    }
}

/// The runtime's `on_thread_unpark` hook: the worker is back from its driver.
pub fn on_unpark() {
    POLLER.with(|poller| poller.borrow_mut().resumed());
}

/// The task that keeps the worker polling for `window` after it runs out of work; spawned
/// once on a single-threaded runtime whose hooks are [`on_park`] and [`on_unpark`]. Never
/// finishes: it ends with the runtime.
pub fn spinner(window: Duration) -> impl Future<Output = ()> {
    std::future::poll_fn(move |cx| {
        POLLER.with(|poller| {
            let mut poller = poller.borrow_mut();
            poller.spun(Instant::now());
            if !poller
                .spinner
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                // Its first poll (or a new waker): polling starts on this thread.
                poller.window = window;
                poller.spinner = Some(cx.waker().clone());
            }
        });
        Poll::Pending
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_micros(200);

    fn poller(at: Instant) -> Poller {
        let mut poller = Poller::new(WINDOW, at);
        poller.spinner = Some(Waker::noop().clone());
        poller
    }

    #[test]
    fn it_polls_until_the_window_passes_without_work_then_sleeps() {
        let t0 = Instant::now();
        let mut p = poller(t0);
        let us = |n| t0 + Duration::from_micros(n);
        // Ran out of work after 50 µs of it: polls.
        assert!(p.out_of_work(us(50)));
        assert_eq!(p.phase(), Phase::Polling(us(50)));
        // Empty rounds (the spinner alone) inside the window: polls on.
        p.resumed();
        p.spun(us(120));
        assert!(p.out_of_work(us(120)));
        assert_eq!(p.phase(), Phase::Polling(us(50)));
        // The window since it ran out is over, still nothing: sleeps.
        p.resumed();
        p.spun(us(250));
        assert!(!p.out_of_work(us(250)));
        assert_eq!(p.phase(), Phase::Sleeping);
        // Woken by work, which runs, then out again: polls for a new window.
        p.resumed();
        assert_eq!(p.phase(), Phase::Working);
        assert!(p.out_of_work(us(5010)));
        assert_eq!(p.phase(), Phase::Polling(us(5010)));
    }

    #[test]
    fn work_found_while_polling_starts_the_window_again() {
        let t0 = Instant::now();
        let mut p = poller(t0);
        let us = |n| t0 + Duration::from_micros(n);
        assert!(p.out_of_work(us(10)));
        // A round 150 µs later ran tasks for 20 µs after the spinner: work came, the window
        // starts again.
        p.spun(us(160));
        assert!(p.out_of_work(us(180)));
        assert_eq!(p.phase(), Phase::Polling(us(180)));
        // So 250 µs after it first ran out it still polls.
        p.spun(us(260));
        assert!(p.out_of_work(us(260)));
        assert_eq!(p.phase(), Phase::Polling(us(180)));
    }

    #[test]
    fn without_a_window_or_a_spinner_it_sleeps_at_once() {
        let t0 = Instant::now();
        let mut off = Poller::new(Duration::ZERO, t0);
        off.spinner = Some(Waker::noop().clone());
        assert!(!off.out_of_work(t0 + WINDOW));
        assert_eq!(off.phase(), Phase::Sleeping);
        let mut no_spinner = Poller::new(WINDOW, t0);
        assert!(!no_spinner.out_of_work(t0 + WINDOW));
    }

    /// CPU time (user + system) of the calling thread so far, from `/proc/thread-self/stat`
    /// (in clock ticks of 10 ms).
    fn thread_cpu() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let (_, rest) = stat.rsplit_once(')').unwrap();
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse::<u64>().unwrap())
            .sum();
        Duration::from_millis(ticks * 10)
    }

    /// On a real single-threaded runtime with the hooks: the worker polls when it runs out of
    /// work, a wake-up from another thread still reaches it, and it polls only for the
    /// window: idle for 500 ms with a 2 ms window, it spends a few milliseconds of CPU where a
    /// worker that never stopped polling would spend most of the 500 (at least a quarter even
    /// on a crowded machine).
    #[test]
    fn a_runtime_with_the_hooks_polls_for_the_window_then_sleeps() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static PARKS: AtomicU64 = AtomicU64::new(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(|| {
                PARKS.fetch_add(1, Ordering::Relaxed);
                on_park();
            })
            .on_thread_unpark(on_unpark)
            .build()
            .unwrap();
        runtime.spawn(spinner(Duration::from_millis(2)));
        // The worker waits on a channel that another thread fills after 500 ms, with no timer
        // of its own: it runs out of work once, polls for the window, then sleeps.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = std::thread::spawn(move || {
            // The idle period under test, not synchronisation.
            std::thread::sleep(Duration::from_millis(500));
            let _ = tx.send(());
        });
        let (parks, cpu) = runtime.block_on(async {
            // The spinner registers on its first poll.
            tokio::task::yield_now().await;
            let (parks, cpu) = (PARKS.load(Ordering::Relaxed), thread_cpu());
            rx.await.unwrap();
            (PARKS.load(Ordering::Relaxed) - parks, thread_cpu() - cpu)
        });
        sender.join().unwrap();
        // A worker that sleeps at once parks once for the wait; this one polled first.
        assert!(parks >= 2, "no polling round: {parks} park(s)");
        assert!(
            cpu < Duration::from_millis(60),
            "polled past the window: {cpu:?} of CPU idle for 500 ms ({parks} rounds)"
        );
    }
}
