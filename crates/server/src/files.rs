//! Reading and writing workspace files from the host side, confined to the workspace.
//!
//! A command can plant symlinks in its workspace (`ln -s /etc/shadow x`), and the server process
//! is more privileged than the sandbox, so path checks by string or by `canonicalize` are not
//! enough (and race against the command). Every access goes through a `cap_std::fs::Dir` opened on
//! the workspace: the kernel resolves the path beneath it (`openat2(RESOLVE_BENEATH)` where
//! available), refusing absolute paths, `..` escapes and symlinks leading out.

use std::io;
use std::io::Read;
use std::path::Path;

use cap_std::fs::Dir;

use crate::error::Error;
use crate::error::Result;

pub(crate) fn open_workspace(workspace: &Path) -> Result<Dir> {
    Dir::open_ambient_dir(workspace, cap_std::ambient_authority()).map_err(|error| {
        Error::Internal(format!(
            "opening workspace {}: {error}",
            workspace.display()
        ))
    })
}

pub(crate) fn check_relative(path: &str) -> Result<&Path> {
    if path.is_empty() {
        return Err(Error::InvalidRequest("`path` is empty".to_owned()));
    }
    if path.contains('\0') {
        return Err(Error::InvalidRequest(
            "`path` contains a NUL byte".to_owned(),
        ));
    }
    let relative = Path::new(path);
    if relative.is_absolute() {
        return Err(Error::PathOutsideWorkspace(path.to_owned()));
    }
    // `..` climbing above the workspace is refused by its spelling alone, whether or not the
    // directories on the way exist (cap-std also refuses it, symlinks included, when resolving).
    let mut depth: usize = 0;
    for component in relative.components() {
        match component {
            std::path::Component::ParentDir => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| Error::PathOutsideWorkspace(path.to_owned()))?;
            }
            std::path::Component::Normal(_) => depth += 1,
            std::path::Component::CurDir
            | std::path::Component::RootDir
            | std::path::Component::Prefix(_) => {}
        }
    }
    Ok(relative)
}

pub(crate) fn map_io(path: &str, error: io::Error) -> Error {
    match error.kind() {
        io::ErrorKind::NotFound => Error::NotFound(path.to_owned()),
        // cap-std's answer to an escape attempt (`..` out, a symlink out).
        io::ErrorKind::PermissionDenied => Error::PathOutsideWorkspace(path.to_owned()),
        io::ErrorKind::IsADirectory | io::ErrorKind::NotADirectory => {
            Error::NotAFile(path.to_owned())
        }
        _ => Error::Internal(format!("file access to {path}: {error}")),
    }
}

/// Opens a regular file for reading, refusing anything else. `O_NONBLOCK` so that a FIFO a
/// command planted cannot block the open (it would wait for a writer forever); it has no effect
/// on the regular file that is then read.
fn open_regular(
    dir: &Dir,
    relative: &Path,
    path: &str,
) -> Result<(cap_std::fs::File, cap_std::fs::Metadata)> {
    use cap_std::fs::OpenOptionsExt;
    let mut options = cap_std::fs::OpenOptions::new();
    options
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY);
    let file = dir
        .open_with(relative, &options)
        .map_err(|error| map_io(path, error))?;
    let meta = file.metadata().map_err(|error| map_io(path, error))?;
    if !meta.is_file() {
        return Err(Error::NotAFile(path.to_owned()));
    }
    Ok((file, meta))
}

/// Reads a regular file of the workspace, at most `max_bytes` of it.
pub(crate) fn read(dir: &Dir, path: &str, max_bytes: u64) -> Result<Vec<u8>> {
    let relative = check_relative(path)?;
    let (file, meta) = open_regular(dir, relative, path)?;
    if meta.len() > max_bytes {
        return Err(Error::FileTooLarge {
            path: path.to_owned(),
            size: meta.len(),
            max: max_bytes,
        });
    }
    let mut content = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes)
        .read_to_end(&mut content)
        .map_err(|error| map_io(path, error))?;
    Ok(content)
}

/// Writes `content` to a workspace file (creating parent directories), atomically: a temporary
/// file in the same directory renamed over the target. A symlink at the target is replaced, never
/// followed.
pub(crate) fn write(dir: &Dir, path: &str, content: &[u8]) -> Result<()> {
    use std::io::Write;
    let relative = check_relative(path)?;
    let Some(name) = relative.file_name() else {
        return Err(Error::InvalidRequest(format!(
            "{path} does not name a file"
        )));
    };
    let parent = relative
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    if let Some(parent) = parent {
        match dir.create_dir_all(parent) {
            // Something exists there that is not a directory inside the workspace (a file, or a
            // link leading out): creating the file below reports which, with the right error.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            other => other.map_err(|error| map_io(path, error))?,
        }
    }
    let temp_name = format!(".slotbox-upload-{}", uuid::Uuid::new_v4().simple());
    let temp = parent.map_or_else(
        || Path::new(&temp_name).to_owned(),
        |parent| parent.join(&temp_name),
    );
    let target = parent.map_or_else(|| Path::new(name).to_owned(), |parent| parent.join(name));
    let written = dir
        .create(&temp)
        .and_then(|mut file| file.write_all(content));
    if let Err(error) = written {
        let _ = dir.remove_file(&temp);
        return Err(map_io(path, error));
    }
    dir.rename(&temp, dir, &target).map_err(|error| {
        let _ = dir.remove_file(&temp);
        map_io(path, error)
    })
}

/// A file's head, for the seed's `/artifacts/read`: up to `limit` bytes and the file's size.
pub(crate) fn read_head(dir: &Dir, path: &str, limit: u64) -> Result<(Vec<u8>, u64)> {
    let relative = check_relative(path)?;
    let (file, meta) = open_regular(dir, relative, path)?;
    let mut content = Vec::new();
    file.take(limit)
        .read_to_end(&mut content)
        .map_err(|error| map_io(path, error))?;
    Ok((content, meta.len()))
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// Relative to the workspace root.
    pub(crate) path: String,
    pub(crate) is_dir: bool,
    pub(crate) size: u64,
    pub(crate) mtime: f64,
}

fn entry_of(path: String, meta: &cap_std::fs::Metadata) -> Entry {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|time| time.into_std().duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |age| age.as_secs_f64());
    Entry {
        path,
        is_dir: meta.is_dir(),
        size: meta.len(),
        mtime,
    }
}

/// Lists `path` (a file: itself; a directory: its entries, sorted, recursively if asked), at most
/// `max_entries`; `true` when entries were left out. Symlinks are listed as links (never followed).
pub(crate) fn list(
    dir: &Dir,
    path: &str,
    recursive: bool,
    max_entries: usize,
) -> Result<(Vec<Entry>, bool)> {
    let relative = check_relative(path)?;
    let normalized = normalize(relative);
    let meta = if normalized.as_os_str().is_empty() {
        dir.dir_metadata().map_err(|error| map_io(path, error))?
    } else {
        dir.metadata(&normalized)
            .map_err(|error| map_io(path, error))?
    };
    if meta.is_file() {
        return Ok((vec![entry_of(display(&normalized), &meta)], false));
    }
    if !meta.is_dir() {
        return Err(Error::InvalidRequest(format!(
            "unsupported path type: {path}"
        )));
    }
    let mut entries = Vec::new();
    // Directories to list, depth first in sorted order: (relative path, its Dir).
    let start = if normalized.as_os_str().is_empty() {
        dir.try_clone().map_err(|error| map_io(path, error))?
    } else {
        dir.open_dir(&normalized)
            .map_err(|error| map_io(path, error))?
    };
    let mut pending = vec![(normalized, start)];
    while let Some((prefix, current)) = pending.pop() {
        let mut children: Vec<(std::ffi::OsString, cap_std::fs::Metadata)> = Vec::new();
        for child in current.entries().map_err(|error| map_io(path, error))? {
            let Ok(child) = child else { continue };
            // The entry's own metadata (a symlink as itself); gone since the listing: skipped.
            let Ok(meta) = child.metadata() else { continue };
            children.push((child.file_name(), meta));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        let mut subdirs = Vec::new();
        for (name, meta) in children {
            if entries.len() >= max_entries {
                return Ok((entries, true));
            }
            let child_path = prefix.join(&name);
            if recursive && meta.is_dir() {
                subdirs.push((child_path.clone(), name.clone()));
            }
            entries.push(entry_of(display(&child_path), &meta));
        }
        // Reverse, so the stack pops them in sorted order.
        for (child_path, name) in subdirs.into_iter().rev() {
            let sub = current
                .open_dir(&name)
                .map_err(|error| map_io(path, error))?;
            pending.push((child_path, sub));
        }
    }
    Ok((entries, false))
}

/// `a/./b/../c` → `a/c` (`..` above the root was already refused by `check_relative`).
fn normalize(relative: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for component in relative.components() {
        match component {
            std::path::Component::Normal(part) => out.push(part),
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir
            | std::path::Component::RootDir
            | std::path::Component::Prefix(_) => {}
        }
    }
    out
}

fn display(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        path.to_string_lossy().into_owned()
    }
}

/// A gzip-compressed tar of the regular files under `path` (names relative to the workspace
/// root), at most `max_entries` files. Fails with `FileTooLarge` as soon as the archive grows
/// past `max_bytes`, without building the rest.
pub(crate) fn archive(
    dir: &Dir,
    path: &str,
    max_bytes: u64,
    max_entries: usize,
) -> Result<(Vec<u8>, usize)> {
    let (entries, _) = list(dir, path, true, usize::MAX)?;
    let sink = LimitedWriter {
        buffer: Vec::new(),
        limit: max_bytes,
    };
    let encoder = flate2::write::GzEncoder::new(sink, flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    let mut count = 0;
    let too_large = |written: u64| Error::FileTooLarge {
        path: format!("archive of {path}"),
        size: written,
        max: max_bytes,
    };
    for entry in entries.iter().filter(|entry| !entry.is_dir) {
        if count >= max_entries {
            break;
        }
        let Ok(meta) = dir.symlink_metadata(&entry.path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let file = dir
            .open(&entry.path)
            .map_err(|error| map_io(&entry.path, error))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(meta.len());
        header.set_mode(0o644);
        header.set_mtime(entry.mtime as u64);
        header.set_cksum();
        builder
            .append_data(&mut header, &entry.path, file.take(meta.len()))
            .map_err(|error| limit_or_io(error, &too_large, max_bytes))?;
        count += 1;
    }
    let encoder = builder
        .into_inner()
        .map_err(|error| limit_or_io(error, &too_large, max_bytes))?;
    let sink = encoder
        .finish()
        .map_err(|error| limit_or_io(error, &too_large, max_bytes))?;
    Ok((sink.buffer, count))
}

fn limit_or_io(error: io::Error, too_large: &dyn Fn(u64) -> Error, max: u64) -> Error {
    if error.kind() == io::ErrorKind::FileTooLarge {
        too_large(max + 1)
    } else {
        Error::Internal(format!("building an archive: {error}"))
    }
}

/// Collects bytes and fails once more than `limit` arrive.
struct LimitedWriter {
    buffer: Vec<u8>,
    limit: u64,
}

impl io::Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if (self.buffer.len() + data.len()) as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "archive over its size limit",
            ));
        }
        self.buffer.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
