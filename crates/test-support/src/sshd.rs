//! A real OpenSSH server on loopback for the ssh backend's tests: its own host key, one client
//! key, and a known-hosts file, so the client checks the host key as in production.
//!
//! Logins get a home of the test's own (`SetEnv HOME`), not the account's: the machine's
//! dotfiles may do anything at every login (on the CI machine root's `~/.bashrc` runs
//! `pyenv rehash`, whose lock file, once left behind by a killed shell, stalls every later
//! login for 60 s). That home's `.bashrc` writes noise to stderr, as such start-ups do, so every
//! ssh test also checks that the start-up's output never reaches a command's output.

use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;

/// A running `sshd` on 127.0.0.1 and the client-side files to reach it; stopped on drop.
#[derive(Debug)]
pub struct TestSshd {
    /// The port it listens on.
    pub port: u16,
    /// The user to log in as (the one running the tests).
    pub user: String,
    /// The client's private key.
    pub identity: PathBuf,
    /// A known-hosts file with the server's key.
    pub known_hosts: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &std::path::Path) -> Result<(), String> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|error| format!("ssh-keygen: {error}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("ssh-keygen failed: {status}"))
}

fn read(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
}

impl TestSshd {
    /// Starts one; `Err` says why it cannot (no sshd installed, not root, …).
    pub fn start() -> Result<Self, String> {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .ok_or("no sshd (apt-get install -y openssh-server)")?;
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let host_key = dir.path().join("host_key");
        let identity = dir.path().join("id");
        keygen(&host_key)?;
        keygen(&identity)?;
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, read(&identity.with_extension("pub"))?)
            .map_err(|error| error.to_string())?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home).map_err(|error| error.to_string())?;
        std::fs::write(home.join(".bashrc"), "echo 'bashrc: start-up noise' >&2\n")
            .map_err(|error| error.to_string())?;
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = std::env::var("USER")
            .ok()
            .filter(|user| !user.is_empty())
            .unwrap_or_else(|| "root".to_owned());
        // A port outside the kernel's ephemeral range, so no `bind(:0)` elsewhere takes it.
        let start = (std::process::id() % 10_000) as u16;
        let port = (0..10_000u16)
            .map(|offset| 10_000 + (start + offset) % 10_000)
            .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
            .ok_or("no free port")?;
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\n\
                 LogLevel ERROR\nMaxSessions 1000\nMaxStartups 1000\nSetEnv HOME={}\n",
                host_key.display(),
                authorized.display(),
                home.display()
            ),
        )
        .map_err(|error| error.to_string())?;
        // Through setpriv: sshd dies with the test process that started it (a test binary
        // keeps one for its whole life and never drops it).
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("starting sshd: {error}"))?;
        let known_hosts = dir.path().join("known_hosts");
        let host_public = read(&host_key.with_extension("pub"))?;
        let mut fields = host_public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {key}\n"))
            .map_err(|error| error.to_string())?;
        let mut server = Self {
            port,
            user,
            identity,
            known_hosts,
            child,
            _dir: dir,
        };
        // Ready when it accepts connections (or failed when it exited).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("sshd exited: {status}"));
            }
            if std::time::Instant::now() > deadline {
                return Err("sshd did not listen within 10 s".to_owned());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
