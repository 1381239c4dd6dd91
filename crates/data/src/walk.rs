//! Listing the files under a folder, following symbolic links (datasets are often linked in from
//! elsewhere) without ever looping: a link back to a folder being walked, a folder reached twice
//! and nesting past [`MAX_FOLDER_DEPTH`] are errors naming the path, so a hostile or mistaken
//! layout ends at once instead of growing a listing for ever.

use crate::DataError;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Folders below a class folder that are walked: deeper nesting is an error (image datasets are
/// one or two levels deep; a chain of links is not).
pub const MAX_FOLDER_DEPTH: usize = 32;

/// What the walk found at one path that is not a folder.
pub(crate) enum Found {
    /// A regular file (or a link to one).
    File(PathBuf),
    /// Something that is neither a folder nor a regular file (a pipe, a device, a socket, a
    /// broken link), and what it is.
    Other(PathBuf, String),
}

/// One walk over the folders of a split: remembers every folder it has listed (by its resolved
/// path), so that two links to one folder are noticed.
pub(crate) struct Walk {
    /// The split folder as given and resolved.
    root: (PathBuf, PathBuf),
    seen: HashSet<PathBuf>,
}

fn is_hidden(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// Sorted entries of `dir` that are not hidden (`.DS_Store`, editors' files).
pub(crate) fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| DataError::io(dir, e))?.path();
        if !is_hidden(&p) {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn resolve(dir: &Path) -> Result<PathBuf, DataError> {
    std::fs::canonicalize(dir).map_err(|e| DataError::io(dir, e))
}

impl Walk {
    /// A walk of the split folder `root`, which counts as already listed.
    pub(crate) fn new(root: &Path) -> Result<Self, DataError> {
        let real = resolve(root)?;
        Ok(Self { root: (root.to_path_buf(), real.clone()), seen: HashSet::from([real]) })
    }

    /// The files under `dir` (a class folder of the split), recursively, sorted within each folder.
    ///
    /// # Errors
    /// [`DataError::Layout`] for a link back to `dir`, to the split folder or to a folder between
    /// them, for a folder reached twice in this walk, and for nesting deeper than
    /// [`MAX_FOLDER_DEPTH`]; [`DataError::Io`] for a folder that cannot be listed.
    pub(crate) fn files_under(&mut self, dir: &Path) -> Result<Vec<Found>, DataError> {
        let mut out = Vec::new();
        let mut above = vec![self.root.clone()];
        self.enter(dir, &mut above, &mut out)?;
        Ok(out)
    }

    /// Lists `dir`, whose ancestors in this walk (as given, and resolved) are `above`: the split
    /// folder, the class folder, and the folders down to `dir`'s parent.
    fn enter(
        &mut self,
        dir: &Path,
        above: &mut Vec<(PathBuf, PathBuf)>,
        out: &mut Vec<Found>,
    ) -> Result<(), DataError> {
        let real = resolve(dir)?;
        if let Some((a, _)) = above.iter().find(|(_, r)| *r == real) {
            return Err(DataError::Layout {
                path: dir.to_path_buf(),
                reason: format!(
                    "symbolic-link loop: this leads back to {}, a folder that contains it; remove the link",
                    a.display()
                ),
            });
        }
        if !self.seen.insert(real.clone()) {
            return Err(DataError::Layout {
                path: dir.to_path_buf(),
                reason: format!(
                    "this is {}, which was already listed under {}: its images would count twice; \
                     remove the link",
                    real.display(),
                    self.root.0.display()
                ),
            });
        }
        // The class folder is at depth 0, with the split folder above it.
        if above.len() - 1 > MAX_FOLDER_DEPTH {
            return Err(DataError::Layout {
                path: dir.to_path_buf(),
                reason: format!("folders nested more than {MAX_FOLDER_DEPTH} deep below the class folder"),
            });
        }
        above.push((dir.to_path_buf(), real));
        for p in entries(dir)? {
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => self.enter(&p, above, out)?,
                Ok(m) if m.is_file() => out.push(Found::File(p)),
                Ok(m) => out.push(Found::Other(p, format!("not a regular file ({})", kind_of(&m)))),
                Err(e) => out.push(Found::Other(p, format!("cannot be read: {e} (a broken symbolic link?)"))),
            }
        }
        above.pop();
        Ok(())
    }
}

/// What kind of non-regular, non-folder entry `m` describes.
fn kind_of(m: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_fifo() {
            return "a named pipe";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    let _ = m;
    "a special file"
}
