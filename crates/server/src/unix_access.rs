//! Whether another user may reach a path: the server hands directories to unprivileged
//! users (the embedded PostgreSQL's, the sandbox's), which resolve paths with their own
//! permissions.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether `uid`/`gid` get `bits` (4 read, 2 write, 1 search/execute) on a file with `meta`
/// (owner, else group, else others: the first class that matches decides, as the kernel
/// does).
pub(crate) fn allows(meta: &std::fs::Metadata, uid: u32, gid: u32, bits: u32) -> bool {
    let mode = meta.mode();
    let granted = if meta.uid() == uid {
        mode >> 6
    } else if meta.gid() == gid {
        mode >> 3
    } else {
        mode
    };
    granted & bits == bits
}

/// The first directory from `dir` up to `/` that `uid`/`gid` may not search, if any.
pub(crate) fn unsearchable_ancestor(
    dir: &Path,
    uid: u32,
    gid: u32,
) -> std::io::Result<Option<PathBuf>> {
    for ancestor in dir.ancestors() {
        if !allows(&std::fs::metadata(ancestor)?, uid, gid, 0o1) {
            return Ok(Some(ancestor.to_owned()));
        }
    }
    Ok(None)
}
