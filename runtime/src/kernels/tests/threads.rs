use super::*;

#[test]
fn physical_cores_counts_distinct_package_core_pairs() {
    let s = "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t: 0\n\n\
             processor\t: 2\nphysical id\t: 0\ncore id\t: 1\n\nprocessor\t: 3\nphysical id\t: 1\ncore id\t: 0\n";
    assert_eq!(physical_cores(s), Some(3));
    assert_eq!(physical_cores("processor : 0\n"), None);
    assert!(default_threads() >= 1);
}

#[test]
fn run_uses_a_pool_of_the_requested_size() {
    assert_eq!(run("t", 1, |t| (t, rayon::current_thread_index())).unwrap(), (1, None));
    let (t, n) = run("t", 3, |t| (t, rayon::current_num_threads())).unwrap();
    assert_eq!((t, n), (3, 3));
    // Nested calls with the same size stay in the pool.
    let inner = run("t", 3, |_| run("t", 3, |_| rayon::current_thread_index().is_some()).unwrap()).unwrap();
    assert!(inner);
}
