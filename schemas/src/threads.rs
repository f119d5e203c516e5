//! Work spread over a few threads: the flush's column gather (ingest) and a
//! row group's column encoding (`datafile`) both take costly items off one
//! queue, on whichever thread is free.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` of every item on up to `threads` threads (scoped: `f` may borrow),
/// the items taken in their order by whichever thread is free (put the
/// costliest first); the results in the items' order. One thread, or one
/// item, runs here with no thread started. `None` if a thread panicked.
pub fn map_on_threads<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Option<Vec<R>> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return Some(items.into_iter().map(f).collect());
    }
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(i) else {
                return done;
            };
            let item = slot
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(item) = item {
                done.push((i, f(item)));
            }
        }
    };
    let mut out: Vec<Option<R>> = (0..slots.len()).map(|_| None).collect();
    let all_joined = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
        let mut all_joined = true;
        for handle in handles {
            match handle.join() {
                Ok(done) => done.into_iter().for_each(|(i, r)| out[i] = Some(r)),
                Err(_) => all_joined = false,
            }
        }
        all_joined
    });
    all_joined.then(|| {
        out.into_iter()
            .map(|r| r.expect("every item mapped"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results come back in the items' order whatever the threads; owned
    /// items move into `f`; a panic in `f` is `None`.
    #[test]
    fn maps_in_order_on_any_number_of_threads() {
        let expected: Vec<String> = (0..50).map(|i| format!("{}", i * i)).collect();
        for threads in [0, 1, 2, 3, 64] {
            let items: Vec<String> = (0..50).map(|i| i.to_string()).collect();
            let out = map_on_threads(items, threads, |s: String| {
                let i: u64 = s.parse().unwrap();
                (i * i).to_string()
            });
            assert_eq!(out.as_ref(), Some(&expected), "{threads} threads");
        }
        assert_eq!(map_on_threads(Vec::<u8>::new(), 4, |x| x), Some(vec![]));
        let panicked = map_on_threads((0..8).collect(), 2, |i: u32| {
            assert_ne!(i, 5, "item 5 fails");
            i
        });
        assert_eq!(panicked, None);
    }
}
