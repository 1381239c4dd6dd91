//! An image folder's walk follows symbolic links but never loops: a link back up, two links to
//! one folder and nesting past the depth limit are errors naming the path; special files (pipes,
//! devices) are refused as images before anything opens them.

use crate::common::*;
use resnet_data::{open, DataError, DatasetKind, OpenOptions, MAX_FOLDER_DEPTH};
use std::path::Path;

fn open_folder(root: &Path, skip_bad: bool) -> Result<resnet_data::Splits, DataError> {
    open(DatasetKind::ImageFolder, Some(root), &OpenOptions { skip_bad, in_memory: Some(false), ..Default::default() })
}

fn layout_error(root: &Path) -> String {
    match open_folder(root, false) {
        Err(e @ DataError::Layout { .. }) => e.to_string(),
        Err(e) => panic!("expected a layout error, got: {e}"),
        Ok(s) => panic!("opened with {} training images but should have failed", s.train.len()),
    }
}

fn two_classes(root: &Path) {
    write_two_splits(root, &["cat", "dog"], 8);
}

/// Links that would make the walk loop or count a folder twice.
#[cfg(unix)]
struct LinkCase {
    what: &'static str,
    /// Made in a fresh two-class folder: (target, link).
    links: &'static [(&'static str, &'static str)],
    /// What the layout error must say.
    says: &'static [&'static str],
}

#[cfg(unix)]
const LOOPING_LINKS: &[LinkCase] = &[
    LinkCase {
        what: "a link back to a parent folder",
        links: &[("..", "train/cat/loop")],
        says: &["train/cat/loop", "symbolic-link loop"],
    },
    LinkCase {
        what: "a link back up from deeper down",
        links: &[("..", "train/dog/sub/up")],
        says: &["train/dog/sub/up", "symbolic-link loop"],
    },
    LinkCase {
        what: "two links to one folder would count its images twice",
        links: &[("../cat", "train/dog/catlink")],
        says: &["train/dog/catlink", "already listed", "twice"],
    },
    // `ln -s .. train/cat/loop; ln -s ../cat train/dog/catlink`: every level doubles the paths.
    LinkCase {
        what: "the issue's layout",
        links: &[("..", "train/cat/loop"), ("../cat", "train/dog/catlink")],
        says: &["train/cat/loop", "symbolic-link loop"],
    },
];

#[cfg(unix)]
#[test]
fn links_that_loop_or_repeat_a_folder_are_layout_errors() {
    for LinkCase { what, links, says } in LOOPING_LINKS {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        two_classes(root);
        for (target, link) in links.iter() {
            let link = root.join(link);
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, link).unwrap();
        }
        let e = layout_error(root);
        assert!(says.iter().all(|part| e.contains(part)), "{what}: `{e}` lacks one of {says:?}");
    }
}

#[cfg(unix)]
#[test]
fn a_link_to_a_folder_elsewhere_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    two_classes(&root);
    write_folder(tmp.path(), "elsewhere", &["birds"], 3, 8);
    std::os::unix::fs::symlink(tmp.path().join("elsewhere/birds"), root.join("train/dog/birds")).unwrap();
    let s = open_folder(&root, false).unwrap();
    assert_eq!(s.train.len(), 2 + 2 + 3, "the linked folder's images count once, for its class");
    assert_eq!(s.train.describe(2), "train/dog/000.jpg");
    assert_eq!(s.train.describe(4), "train/dog/birds/000.jpg");
}

#[test]
fn nesting_past_the_depth_limit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    two_classes(root);
    let mut deep = root.join("train/cat");
    for _ in 0..MAX_FOLDER_DEPTH {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("x.jpg"), jpeg_bytes(&rgb(8, 8, 0, 0))).unwrap();
    let s = open_folder(root, false).unwrap();
    assert_eq!(s.train.len(), 5, "{MAX_FOLDER_DEPTH} levels below the class folder are read");
    std::fs::create_dir_all(deep.join("d")).unwrap();
    let e = layout_error(root);
    assert!(e.contains(&format!("more than {MAX_FOLDER_DEPTH} deep")), "{e}");
}

#[cfg(unix)]
#[test]
fn special_files_are_not_images_and_are_never_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    two_classes(root);
    // Reading either would never end: /dev/zero has no end, a pipe without a writer blocks.
    std::os::unix::fs::symlink("/dev/zero", root.join("train/cat/zero.jpg")).unwrap();
    let fifo = root.join("train/dog/pipe.png");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success());
    let e = match open_folder(root, false) {
        Err(e @ DataError::NotAnImage { .. }) => e.to_string(),
        other => panic!("expected a not-an-image error, got {:?}", other.map(|s| s.train.len())),
    };
    assert!(e.contains("train/cat/zero.jpg") && e.contains("not a regular file (a device)"), "{e}");
    let s = open_folder(root, true).unwrap();
    assert_eq!(s.train.len(), 4);
    assert_eq!(s.skipped.len(), 1 + usize::from(made), "{:?}", s.skipped);
    if made {
        assert!(s.skipped.iter().any(|m| m.contains("pipe.png") && m.contains("a named pipe")), "{:?}", s.skipped);
    }
}
