use super::*;

#[test]
fn kernel_class_strips_the_generated_prefix_only() {
    assert_eq!(kernel_class("omnic_k12_rms_norm"), "rms_norm");
    assert_eq!(kernel_class("omnic_k0_add"), "add");
    // Not the generator's naming: the symbol itself.
    assert_eq!(kernel_class("omnic_kx_add"), "omnic_kx_add");
    assert_eq!(kernel_class("scale_add"), "scale_add");
}

#[test]
fn peak_rss_is_read_from_proc_on_linux() {
    if cfg!(target_os = "linux") {
        let rss = peak_rss_bytes().unwrap();
        // A running test binary holds at least a megabyte and less than a terabyte.
        assert!(rss > (1 << 20) && rss < (1 << 40), "{rss}");
    }
}
