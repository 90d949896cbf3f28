//! Resource limits for long-lived sandboxes through cgroups: memory, process count, CPU.
//!
//! Hosts differ: a pure cgroup v2 tree (`/sys/fs/cgroup/cgroup.controllers` lists the
//! controllers), or the hybrid layout common in containers and older distributions, where
//! `memory`, `pids` and `cpu` are writable v1 hierarchies and the unified v2 mount has none of
//! them. `CgroupLayout::detect` finds which, and a sandbox's cgroup is created below slotbox's own
//! cgroup in each hierarchy (proper delegation: nothing outside our subtree is touched).
//!
//! A limit that was asked for and cannot be enforced is an error, never silently dropped.

use std::path::Path;
use std::path::PathBuf;

use crate::Error;
use crate::Result;

/// Limits for one sandbox; `None` leaves that resource unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CgroupLimits {
    /// Memory (and, on v2, swap is not counted separately), in bytes.
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// CPU time in thousandths of a CPU (1000 = one full core).
    pub cpu_millis: Option<u64>,
}

impl CgroupLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.memory_bytes.is_some() || self.pids.is_some() || self.cpu_millis.is_some()
    }
}

/// Where each controller's hierarchy is, for this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// One unified tree; `base` is this process's cgroup directory in it.
    V2 {
        /// Our cgroup's directory.
        base: PathBuf,
    },
    /// Separate v1 hierarchies; each is this process's cgroup directory in that controller.
    V1 {
        /// Our memory cgroup's directory.
        memory: PathBuf,
        /// Our pids cgroup's directory.
        pids: PathBuf,
        /// Our cpu cgroup's directory.
        cpu: PathBuf,
    },
}

impl CgroupLayout {
    /// The name health reports use (`"v2"`, `"v1"`).
    pub fn name(&self) -> &'static str {
        match self {
            CgroupLayout::V2 { .. } => "v2",
            CgroupLayout::V1 { .. } => "v1",
        }
    }

    /// Finds the layout from `/proc/self/cgroup` and `/sys/fs/cgroup`, preferring v2 when it
    /// has all three controllers.
    pub fn detect() -> Result<Self> {
        let membership = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(Error::io("reading /proc/self/cgroup"))?;
        let root = Path::new("/sys/fs/cgroup");
        let own = |controller: &str| -> Option<String> {
            membership.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|name| name == controller)
                    .then(|| path.trim_start_matches('/').to_owned())
            })
        };
        if let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers")) {
            let has = |name: &str| controllers.split_whitespace().any(|c| c == name);
            if has("memory") && has("pids") && has("cpu") {
                let path = own("").unwrap_or_default();
                return Ok(CgroupLayout::V2 {
                    base: root.join(path),
                });
            }
        }
        let v1 = |controller: &str| -> Option<PathBuf> {
            let dir = root.join(controller).join(own(controller)?);
            dir.join("cgroup.procs").exists().then_some(dir)
        };
        match (v1("memory"), v1("pids"), v1("cpu")) {
            (Some(memory), Some(pids), Some(cpu)) => Ok(CgroupLayout::V1 { memory, pids, cpu }),
            _ => Err(Error::CgroupsUnavailable {
                detail: "neither a cgroup v2 tree with memory, pids and cpu, nor v1 memory, pids and cpu hierarchies under /sys/fs/cgroup".to_owned(),
            }),
        }
    }
}

/// One sandbox's cgroup (a directory per hierarchy). Dropping it kills what is left in it and
/// removes it.
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    dirs: Vec<PathBuf>,
    /// The directory whose `cgroup.procs` lists the members (every dir lists the same ones).
    procs: PathBuf,
    v2: bool,
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::CgroupsUnavailable {
        detail: format!("writing {value} to {}: {source}", path.display()),
    })
}

impl SandboxCgroup {
    /// Creates `name` under slotbox's cgroups with `limits`.
    pub(crate) fn create(layout: &CgroupLayout, name: &str, limits: CgroupLimits) -> Result<Self> {
        sweep_stale(layout);
        let mkdir = |dir: &Path| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::create_dir(&path).map_err(|source| Error::CgroupsUnavailable {
                detail: format!("creating {}: {source}", path.display()),
            })?;
            Ok(path)
        };
        match layout {
            CgroupLayout::V2 { base } => {
                let dir = mkdir(base)?;
                let group = Self {
                    dirs: vec![dir.clone()],
                    procs: dir.clone(),
                    v2: true,
                };
                if let Some(bytes) = limits.memory_bytes {
                    write(&dir.join("memory.max"), &bytes.to_string())?;
                    // No swapping around the limit (absent when the host has no swap accounting,
                    // and then there is nothing to swap around it).
                    if dir.join("memory.swap.max").exists() {
                        write(&dir.join("memory.swap.max"), "0")?;
                    }
                }
                if let Some(pids) = limits.pids {
                    write(&dir.join("pids.max"), &pids.to_string())?;
                }
                if let Some(millis) = limits.cpu_millis {
                    write(&dir.join("cpu.max"), &format!("{} 100000", millis * 100))?;
                }
                Ok(group)
            }
            CgroupLayout::V1 { memory, pids, cpu } => {
                let mut group = Self {
                    dirs: Vec::new(),
                    procs: PathBuf::new(),
                    v2: false,
                };
                let memory = mkdir(memory)?;
                group.dirs.push(memory.clone());
                group.procs = memory.clone();
                let pids_dir = mkdir(pids)?;
                group.dirs.push(pids_dir.clone());
                let cpu_dir = mkdir(cpu)?;
                group.dirs.push(cpu_dir.clone());
                if let Some(bytes) = limits.memory_bytes {
                    write(&memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    // Without swap accounting this file does not exist; the limit above holds.
                    let _ = std::fs::write(
                        memory.join("memory.memsw.limit_in_bytes"),
                        bytes.to_string(),
                    );
                }
                if let Some(pids) = limits.pids {
                    write(&pids_dir.join("pids.max"), &pids.to_string())?;
                }
                if let Some(millis) = limits.cpu_millis {
                    write(&cpu_dir.join("cpu.cfs_period_us"), "100000")?;
                    write(
                        &cpu_dir.join("cpu.cfs_quota_us"),
                        &(millis * 100).to_string(),
                    )?;
                }
                Ok(group)
            }
        }
    }

    /// Moves process `pid` (and so its future children) into the cgroup.
    pub(crate) fn add(&self, pid: i32) -> Result<()> {
        for dir in &self.dirs {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn members(&self) -> Vec<i32> {
        std::fs::read_to_string(self.procs.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Kills every process in the cgroup.
    pub(crate) fn kill_all(&self) {
        if self.v2 && std::fs::write(self.procs.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        // v1 (or v2 before 5.14): kill member by member; a fork racing the loop is caught by
        // the next round.
        for _ in 0..16 {
            let members = self.members();
            if members.is_empty() {
                return;
            }
            for pid in members {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        self.kill_all();
        let dirs = std::mem::take(&mut self.dirs);
        // A cgroup can be removed once its last (killed) member is reaped; the kernel does that
        // promptly, so short retries are enough. They sleep, so off the async threads.
        let remove = move || {
            for dir in dirs.iter().rev() {
                let mut last_error = None;
                for _ in 0..100 {
                    match std::fs::remove_dir(dir) {
                        Ok(()) => {
                            last_error = None;
                            break;
                        }
                        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                            last_error = None;
                            break;
                        }
                        Err(error) => {
                            last_error = Some(error);
                            std::thread::sleep(std::time::Duration::from_millis(5));
                        }
                    }
                }
                if let Some(error) = last_error {
                    tracing::warn!(cgroup = %dir.display(), %error, "could not remove a sandbox cgroup");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(remove);
            }
            Err(_) => remove(),
        }
    }
}

/// How old an empty `slotbox-*` cgroup must be before another slotbox removes it: a process that
/// exited before its background cleanup ran leaves its (empty) cgroups behind.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes empty `slotbox-*` cgroups older than `STALE_AFTER` (best effort: one being set up by
/// another process right now is younger, and a non-empty one cannot be removed anyway).
fn sweep_stale(layout: &CgroupLayout) {
    let parents: Vec<&Path> = match layout {
        CgroupLayout::V2 { base } => vec![base.as_path()],
        CgroupLayout::V1 { memory, pids, cpu } => {
            vec![memory.as_path(), pids.as_path(), cpu.as_path()]
        }
    };
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_ours = entry.file_name().to_string_lossy().starts_with("slotbox-");
            let old = entry
                .metadata()
                .and_then(|meta| meta.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > STALE_AFTER);
            let empty = std::fs::read_to_string(entry.path().join("cgroup.procs"))
                .is_ok_and(|procs| procs.trim().is_empty());
            if is_ours && old && empty {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// `pid` and all its descendants, from `/proc` (parents before children).
pub(crate) fn process_tree(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses: the ppid follows the last ')'.
            let Some(after) = stat.rfind(')').map(|end| &stat[end + 1..]) else {
                continue;
            };
            if let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|field| field.parse().ok())
            {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(child, _)| *child),
        );
        index += 1;
    }
    tree
}
