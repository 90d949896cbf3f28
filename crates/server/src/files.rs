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

fn open_workspace(workspace: &Path) -> Result<Dir> {
    Dir::open_ambient_dir(workspace, cap_std::ambient_authority()).map_err(|error| {
        Error::Internal(format!(
            "opening workspace {}: {error}",
            workspace.display()
        ))
    })
}

fn check_relative(path: &str) -> Result<&Path> {
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

fn map_io(path: &str, error: io::Error) -> Error {
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

/// Reads a regular file of the workspace, at most `max_bytes` of it.
pub(crate) fn read(workspace: &Path, path: &str, max_bytes: u64) -> Result<Vec<u8>> {
    let relative = check_relative(path)?;
    let dir = open_workspace(workspace)?;
    let file = dir.open(relative).map_err(|error| map_io(path, error))?;
    let meta = file.metadata().map_err(|error| map_io(path, error))?;
    if !meta.is_file() {
        return Err(Error::NotAFile(path.to_owned()));
    }
    if meta.len() > max_bytes {
        return Err(Error::InvalidRequest(format!(
            "{path} is {} bytes, over the {max_bytes}-byte limit",
            meta.len()
        )));
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
pub(crate) fn write(workspace: &Path, path: &str, content: &[u8]) -> Result<()> {
    use std::io::Write;
    let relative = check_relative(path)?;
    let dir = open_workspace(workspace)?;
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
    dir.rename(&temp, &dir, &target).map_err(|error| {
        let _ = dir.remove_file(&temp);
        map_io(path, error)
    })
}
