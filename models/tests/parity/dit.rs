use crate::common::check_fixture;

#[test]
fn dit_matches_diffusers() {
    check_fixture("dit", 1e-4);
}
