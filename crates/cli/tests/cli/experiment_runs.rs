//! `resnet experiment`: a selection that names nothing is refused before any training.

use crate::common::{run, scratch};

#[test]
fn shortcuts_only_an_unknown_option_is_an_error() {
    let dir = scratch();
    run(dir.path(), ["experiment", "shortcuts", "--only", "D", "--out", "exp"]).fails_with(&[
        "--only \"D\"",
        "A",
        "B",
        "C",
    ]);
    assert!(!dir.path().join("exp").exists(), "nothing is written for a bad selection");
}

#[test]
fn degradation_only_an_unknown_network_is_an_error() {
    let dir = scratch();
    run(dir.path(), ["experiment", "degradation", "--depths", "20", "--only", "resnet21", "--out", "exp"])
        .fails_with(&["\"resnet21\"", "plain20", "resnet20"]);
}
