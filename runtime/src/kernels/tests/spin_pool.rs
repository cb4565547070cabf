use super::*;
use std::sync::atomic::AtomicU32;

fn counts(n: usize) -> Vec<AtomicU32> {
    (0..n).map(|_| AtomicU32::new(0)).collect()
}

#[test]
fn every_task_runs_exactly_once_over_many_jobs() {
    let pool = SpinPool::new(3).unwrap();
    for n in [0usize, 1, 2, 3, 7, 64, 1000] {
        for _ in 0..50 {
            let c = counts(n);
            pool.run(n, &|i| {
                c[i].fetch_add(1, Relaxed);
            })
            .unwrap();
            assert!(c.iter().all(|x| x.load(Relaxed) == 1), "n = {n}");
        }
    }
}

#[test]
fn workers_take_part_and_sleep_when_idle() {
    let pool = SpinPool::new(2).unwrap();
    let seen = Mutex::new(std::collections::HashSet::new());
    // Slow tasks so that the worker gets some of them.
    pool.run(8, &|_| {
        std::thread::sleep(Duration::from_millis(2));
        seen.lock().unwrap().insert(std::thread::current().id());
    })
    .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
    // After the spin time the worker blocks; a new job still wakes it.
    std::thread::sleep(SPIN * 3);
    let c = counts(100);
    pool.run(100, &|i| {
        c[i].fetch_add(1, Relaxed);
    })
    .unwrap();
    assert!(c.iter().all(|x| x.load(Relaxed) == 1));
}

#[test]
fn nested_and_concurrent_calls_run_inline() {
    let pool = Arc::new(SpinPool::new(2).unwrap());
    let c = counts(16);
    pool.run(4, &|i| {
        pool.run(4, &|j| {
            c[i * 4 + j].fetch_add(1, Relaxed);
        })
        .unwrap();
    })
    .unwrap();
    assert!(c.iter().all(|x| x.load(Relaxed) == 1));
    // Two callers at once: one gets the pool, the other runs inline.
    let total = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let (p, t) = (pool.clone(), total.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    p.run(10, &|_| {
                        t.fetch_add(1, Relaxed);
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(total.load(Relaxed), 2 * 200 * 10);
}

#[test]
fn a_panicking_task_is_an_error_and_the_pool_goes_on() {
    let pool = SpinPool::new(2).unwrap();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = pool.run(10, &|i| {
        if i == 3 {
            panic!("task 3");
        }
    });
    std::panic::set_hook(prev);
    assert!(r.is_err());
    let c = counts(10);
    pool.run(10, &|i| {
        c[i].fetch_add(1, Relaxed);
    })
    .unwrap();
    assert!(c.iter().all(|x| x.load(Relaxed) == 1));
}
