//! Removing what commands leave behind: fast whatever it holds, and never fooled by it.
//!
//! A workspace may hold millions of files, symlinks to `/` (the seed's `rmtree` fails forever on
//! those), or directories a command made read-only. So a reset renames the whole directory into
//! the data dir's trash (one syscall, however big) and puts a fresh empty directory in its place;
//! the old tree is deleted in the background by `remove_tree`, which never follows symlinks and
//! makes directories writable before emptying them.

use std::io;
use std::path::Path;
use std::path::PathBuf;

/// Replaces `workspace` by a fresh empty directory; the old contents go to `trash` (same
/// filesystem) for `remove_tree`. Returns the trashed path, if anything was moved.
pub fn swap_for_empty(workspace: &Path, trash: &Path) -> io::Result<Option<PathBuf>> {
    std::fs::create_dir_all(trash)?;
    let trashed = match std::fs::symlink_metadata(workspace) {
        Ok(_) => {
            let name = workspace
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let target = trash.join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
            std::fs::rename(workspace, &target)?;
            Some(target)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    std::fs::create_dir(workspace)?;
    // Postcondition: the slot is handed out empty, or not at all.
    if std::fs::read_dir(workspace)?.next().is_some() {
        return Err(io::Error::other("workspace not empty after reset"));
    }
    Ok(trashed)
}

/// Deletes `path` and everything under it without following symlinks, making directories
/// writable first. Iterative, so a deeply nested tree cannot overflow the stack.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // (directory, whether its entries were already pushed)
    let mut stack: Vec<(PathBuf, bool)> = Vec::new();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => stack.push((path.to_owned(), false)),
        Ok(_) => return std::fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    }
    while let Some((dir, expanded)) = stack.pop() {
        if expanded {
            std::fs::remove_dir(&dir)?;
            continue;
        }
        // A command may have left it read-only (chmod 0): we own it, so take the rights back.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        stack.push((dir.clone(), true));
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                stack.push((entry.path(), false));
            } else {
                std::fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_read_only_dirs_and_deep_trees_are_removed_without_following_links() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep.txt"), "precious").unwrap();
        let workspace = root.path().join("slot_0");
        std::fs::create_dir(&workspace).unwrap();
        std::os::unix::fs::symlink("/", workspace.join("root-link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), workspace.join("outside-link")).unwrap();
        let locked = workspace.join("locked");
        std::fs::create_dir_all(locked.join("inner")).unwrap();
        std::fs::write(locked.join("inner/file"), "x").unwrap();
        std::fs::set_permissions(locked.join("inner"), std::fs::Permissions::from_mode(0o500))
            .unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let mut deep = workspace.join("deep");
        for _ in 0..300 {
            deep = deep.join("d");
        }
        std::fs::create_dir_all(&deep).unwrap();

        let trashed = swap_for_empty(&workspace, &root.path().join(".trash"))
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read_dir(&workspace).unwrap().count(), 0);
        remove_tree(&trashed).unwrap();
        assert!(!trashed.exists());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("keep.txt")).unwrap(),
            "precious"
        );
        assert!(Path::new("/usr/bin").exists());
    }
}

/// A directory removed (with `remove_tree`, so read-only subdirectories and symlinks left by
/// commands are no obstacle) when dropped; a failure is logged, not ignored.
#[derive(Debug)]
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new empty directory named `prefix…` in `parent`.
    pub(crate) fn create(parent: &Path, prefix: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
        Ok(Self(dir.keep()))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = remove_tree(&self.0) {
            tracing::warn!(path = %self.0.display(), %error, "could not remove a session directory");
        }
    }
}
