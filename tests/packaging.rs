//! The Debian package, end to end: `cargo deb` builds it, `dpkg-deb` and `lintian` inspect it,
//! and dpkg installs, upgrades, removes and purges it in a throwaway root, where the installed
//! binary and the installed systemd unit are checked too.
//!
//! The throwaway root is an overlay of this machine's own `/` (Debian 12, like the target) on a
//! tmpfs, mounted in a private mount namespace that dies with the test: dpkg, the maintainer
//! scripts, systemd-sysusers and deb-systemd-helper run for real inside `chroot`, and nothing
//! reaches the host. This needs root, `unshare`/`nsenter`, overlayfs, `cargo-deb`, `dpkg-deb`,
//! `lintian` and `systemd-analyze`. Without them these tests print why and pass, except under
//! CI (`CI` set), where a missing tool fails them: `.ci/run` installs everything.
//!
//! `cargo deb` builds the release binary (a few minutes from cold); both packages are built once
//! per test run and shared by the tests here.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

const PKG: &str = "lark-oncall";
const CONFIG: &str = "/etc/lark-oncall/config.toml";
const STATE_DIR: &str = "/var/lib/lark-oncall";
const UNIT: &str = "/usr/lib/systemd/system/lark-oncall.service";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A short fingerprint of a file's bytes, so that failed comparisons print something readable.
fn digest(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(sha2::Sha256::digest(&bytes))
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn succeeded(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what} failed: {}", describe(&out));
    out
}

/// Writes to the real stderr, past libtest's capture, so CI logs show it for passing tests too.
fn note(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

fn tool_runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Why this machine cannot run the packaging tests, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Some("not running as root (dpkg, chroot and mount need it)".into());
    }
    let tools: [(&str, &[&str], &str); 7] = [
        (
            "cargo-deb",
            &["deb", "--version"],
            "cargo install cargo-deb --locked",
        ),
        ("dpkg-deb", &["--version"], "apt-get install dpkg"),
        ("lintian", &["--version"], "apt-get install lintian"),
        ("systemd-analyze", &["--version"], "apt-get install systemd"),
        ("unshare", &["--version"], "apt-get install util-linux"),
        ("nsenter", &["--version"], "apt-get install util-linux"),
        ("setpriv", &["--version"], "apt-get install util-linux"),
    ];
    for (name, args, install) in tools {
        let program = if name == "cargo-deb" {
            cargo()
        } else {
            name.to_string()
        };
        if !tool_runs(&program, args) {
            return Some(format!("{name} is not available ({install})"));
        }
    }
    if !tool_runs("unshare", &["--mount", "true"]) {
        return Some("cannot create a mount namespace (unshare --mount)".into());
    }
    None
}

/// True when the test should run; otherwise says why it is skipped, or fails under CI.
fn prerequisites_met() -> bool {
    let Some(reason) = missing_prerequisite() else {
        return true;
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "packaging tests cannot run under CI: {reason}"
    );
    note(&format!("SKIPPED packaging test: {reason}"));
    false
}

/// The package at the crate's version, and the same build as a higher revision for upgrades.
/// They live in cargo's per-target test scratch directory, replaced by every run.
struct Debs {
    first: PathBuf,
    upgrade: PathBuf,
}

fn debs() -> &'static Debs {
    static DEBS: OnceLock<Debs> = OnceLock::new();
    DEBS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packaging");
        let _ = std::fs::remove_dir_all(&dir);
        let build = |extra: &[&str], out: &Path| -> PathBuf {
            std::fs::create_dir_all(out).unwrap();
            let res = Command::new(cargo())
                .args(["deb", "--output"])
                .arg(out)
                .args(extra)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .expect("run cargo deb");
            let res = succeeded(res, "cargo deb");
            let deb = PathBuf::from(text(&res.stdout).trim().lines().last().unwrap_or_default());
            assert!(deb.is_file(), "cargo deb made no package: {}", describe(&res));
            deb
        };
        let first = build(&[], &dir.join("first"));
        let upgrade = build(&["--no-build", "--deb-revision", "2"], &dir.join("upgrade"));
        Debs { first, upgrade }
    })
}

fn deb_version() -> String {
    format!("{}-1", env!("CARGO_PKG_VERSION"))
}

/// A throwaway Debian root: this machine's `/` overlaid on a tmpfs inside a private mount
/// namespace, kept alive by a holder process. Dropping it kills the holder, which unmounts all.
struct Root {
    holder: Child,
    _dir: tempfile::TempDir,
    /// The root's path as seen inside the namespace.
    path: PathBuf,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().expect("tempdir");
        let (base, path) = (dir.path().join("base"), dir.path().join("root"));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&path).unwrap();
        let script = format!(
            r#"set -e
mount -t tmpfs tmpfs {base}
mkdir {base}/upper {base}/work
mount -t overlay overlay -o lowerdir=/,upperdir={base}/upper,workdir={base}/work {root}
mount --rbind /dev {root}/dev
mount -t proc proc {root}/proc
mount -t tmpfs tmpfs {root}/run
mount -t tmpfs tmpfs {root}/tmp
echo ready
exec sleep 3600"#,
            base = base.display(),
            root = path.display()
        );
        // The holder dies with the thread that started it even if the test process is killed
        // (--pdeathsig), taking the namespace and its mounts with it.
        let mut holder = Command::new("setpriv")
            .args([
                "--pdeathsig",
                "KILL",
                "--",
                "unshare",
                "--mount",
                "--propagation",
                "private",
            ])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let status = holder.wait().unwrap();
            panic!("could not set up the throwaway root (unshare/overlayfs): {status}");
        }
        Root {
            holder,
            _dir: dir,
            path,
        }
    }

    /// `path` inside the root, as the host reaches it (through the holder's mount namespace).
    fn host_path(&self, path: &str) -> PathBuf {
        let inside = self.path.join(path.trim_start_matches('/'));
        PathBuf::from(format!("/proc/{}/root", self.holder.id())).join(inside.strip_prefix("/").unwrap())
    }

    /// A command run inside the root (nsenter and chroot exec it: its pid is the command's).
    fn prepare(&self, chroot_args: &[&str], args: &[&str]) -> Command {
        let pid = self.holder.id().to_string();
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &pid, "--mount", "--", "chroot"])
            .args(chroot_args)
            .arg(&self.path)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("HOME", "/root")
            .stdin(Stdio::null());
        command
    }

    fn command(&self, chroot_args: &[&str], args: &[&str]) -> Output {
        self.prepare(chroot_args, args).output().expect("run nsenter")
    }

    fn service_userspec(&self) -> String {
        let (uid, gid) = self.service_ids().expect("the service user exists");
        format!("--userspec={uid}:{gid}")
    }

    /// Runs a command inside the root as root.
    fn run(&self, args: &[&str]) -> Output {
        self.command(&[], args)
    }

    /// Runs a command inside the root as the service user.
    fn run_as_service(&self, args: &[&str]) -> Output {
        self.command(&[&self.service_userspec()], args)
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.host_path(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    fn write(&self, path: &str, contents: &str) {
        std::fs::write(self.host_path(path), contents).unwrap_or_else(|e| panic!("write {path}: {e}"))
    }

    /// The service user's uid and gid from the root's /etc/passwd.
    fn service_ids(&self) -> Option<(u32, u32)> {
        self.read("/etc/passwd").lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields[0] == PKG).then(|| (fields[2].parse().unwrap(), fields[3].parse().unwrap()))
        })
    }

    /// `dpkg -i`, with no answers on standard input: an upgrade that would prompt fails.
    fn install(&self, deb: &Path) -> Output {
        let name = format!("/tmp/{}", deb.file_name().unwrap().to_str().unwrap());
        std::fs::copy(deb, self.host_path(&name)).expect("copy the .deb into the root");
        self.run(&["dpkg", "-i", &name])
    }

    fn installed_version(&self) -> Option<String> {
        let out = self.run(&["dpkg-query", "-W", "-f=${Status} ${Version}", PKG]);
        out.status.success().then(|| text(&out.stdout))
    }

    /// A fresh install of `deb` (purging any copy this machine itself had installed).
    fn with_package(deb: &Path) -> Root {
        let root = Root::new();
        if root.installed_version().is_some() {
            succeeded(root.run(&["dpkg", "--purge", PKG]), "purging the host's copy");
        }
        let out = succeeded(root.install(deb), "dpkg -i");
        println!("dpkg -i:\n{}{}", text(&out.stdout), text(&out.stderr));
        root
    }

    /// Sets `server.public_url` in the installed config, keeping the rest of the file.
    fn set_public_url(&self) {
        let config = self.read(CONFIG);
        assert!(config.contains("\n#public_url = "), "{config}");
        self.write(CONFIG, &config.replace("\n#public_url = ", "\npublic_url = "));
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn package_contents_and_lintian() {
    if !prerequisites_met() {
        return;
    }
    let deb = &debs().first;
    let name = deb.file_name().unwrap().to_str().unwrap();
    assert_eq!(name, format!("{PKG}_{}_amd64.deb", deb_version()));

    let listing = text(
        &succeeded(
            Command::new("dpkg-deb").arg("-c").arg(deb).output().unwrap(),
            "dpkg-deb -c",
        )
        .stdout,
    );
    for (mode, path) in [
        ("-rwxr-xr-x 0/0", "./usr/bin/lark-oncall"),
        ("-rw-r--r-- 0/0", "./etc/lark-oncall/config.toml"),
        ("-rw-r--r-- 0/0", "./usr/lib/systemd/system/lark-oncall.service"),
        ("-rw-r--r-- 0/0", "./usr/lib/sysusers.d/lark-oncall.conf"),
        ("-rw-r--r-- 0/0", "./usr/share/doc/lark-oncall/INSTALL.md"),
        ("-rw-r--r-- 0/0", "./usr/share/doc/lark-oncall/copyright"),
        (
            "-rw-r--r-- 0/0",
            "./usr/share/doc/lark-oncall/changelog.Debian.gz",
        ),
    ] {
        assert!(
            listing.lines().any(|l| l.starts_with(mode) && l.ends_with(path)),
            "{path} ({mode}) is not in the package:\n{listing}"
        );
    }
    // The state directory belongs to the postinst, so that dpkg never removes or resets it.
    assert!(!listing.contains("./var/lib/"), "{listing}");

    let control = |field: &str| {
        let out = Command::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .arg(field)
            .output()
            .unwrap();
        text(&succeeded(out, "dpkg-deb -f").stdout).trim().to_string()
    };
    assert_eq!(control("Version"), deb_version());
    for dep in ["ca-certificates", "libc6", "systemd", "procps"] {
        assert!(
            control("Depends").contains(dep),
            "Depends lacks {dep}: {}",
            control("Depends")
        );
    }
    let info = tempfile::tempdir().unwrap();
    succeeded(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(info.path())
            .output()
            .unwrap(),
        "dpkg-deb -e",
    );
    assert_eq!(
        std::fs::read_to_string(info.path().join("conffiles"))
            .unwrap()
            .trim(),
        CONFIG
    );
    for script in ["postinst", "postrm"] {
        let body = std::fs::read_to_string(info.path().join(script)).unwrap();
        assert!(
            body.contains("# Automatically added by cargo-deb"),
            "{script} lacks the generated part"
        );
    }

    let out = Command::new("lintian")
        .args(["--info", "--display-info", "--pedantic"])
        .arg(deb)
        .output()
        .unwrap();
    let report = text(&out.stdout);
    println!("lintian:\n{report}{}", text(&out.stderr));
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(out.status.success(), "lintian failed: {}", describe(&out));
}

#[test]
fn fresh_install_creates_the_user_and_state_and_waits_for_public_url() {
    if !prerequisites_met() {
        return;
    }
    let root = Root::with_package(&debs().first);
    assert_eq!(
        root.installed_version().unwrap(),
        format!("install ok installed {}", deb_version())
    );

    // The system user, from sysusers.d: no login shell, home in the state directory.
    let passwd = root.read("/etc/passwd");
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("lark-oncall:"))
        .unwrap_or_else(|| panic!("no lark-oncall user in the root's /etc/passwd:\n{passwd}"));
    assert!(
        entry.ends_with(":/var/lib/lark-oncall:/usr/sbin/nologin"),
        "{entry}"
    );
    let (uid, gid) = root.service_ids().unwrap();
    assert!(uid > 0 && uid < 1000, "not a system uid: {entry}");

    // The state directory: the service user's, closed to everyone else.
    let state = std::fs::metadata(root.host_path(STATE_DIR)).unwrap();
    assert!(state.is_dir());
    assert_eq!((state.uid(), state.gid()), (uid, gid));
    assert_eq!(state.permissions().mode() & 0o7777, 0o750);

    // The binary and the default config, which dpkg tracks as a conffile.
    let bin = std::fs::metadata(root.host_path("/usr/bin/lark-oncall")).unwrap();
    assert_eq!((bin.uid(), bin.permissions().mode() & 0o7777), (0, 0o755));
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config.toml")).unwrap();
    assert_eq!(root.read(CONFIG), shipped);
    let conffiles = text(
        &succeeded(
            root.run(&["dpkg-query", "-W", "-f=${Conffiles}", PKG]),
            "dpkg-query",
        )
        .stdout,
    );
    assert!(
        conffiles.trim_start().starts_with(&format!("{CONFIG} ")),
        "{conffiles:?}"
    );

    // Enabled, for the next boot; not started (the postinst says what to do first).
    assert!(
        root.host_path("/etc/systemd/system/multi-user.target.wants/lark-oncall.service")
            .symlink_metadata()
            .is_ok(),
        "the unit is not enabled"
    );

    // The default config names the missing public_url, with the exit status that stops the
    // unit's restarts (RestartPreventExitStatus=78).
    let out = root.run_as_service(&["/usr/bin/lark-oncall", "check-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("server.public_url: is required"),
        "{}",
        describe(&out)
    );

    // Once it is set, the service user's check passes, which includes writing to the state dir.
    root.set_public_url();
    let out = succeeded(
        root.run_as_service(&["/usr/bin/lark-oncall", "check-config"]),
        "check-config",
    );
    assert!(text(&out.stdout).contains("public_url = \"https://oncall.example.com\""));
    // Another unprivileged user cannot use the state directory.
    let out = root.command(
        &["--userspec=65534:65534"],
        &["/usr/bin/lark-oncall", "check-config"],
    );
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(text(&out.stderr).contains("storage.path"), "{}", describe(&out));
}

const STATE_FILE: &str = "/var/lib/lark-oncall/state.redb";

/// Returns the state file's digest after the service user added an API token to it.
fn create_state(root: &Root) -> String {
    succeeded(
        root.run_as_service(&["/usr/bin/lark-oncall", "admin", "create-token", "packaging-test"]),
        "admin create-token",
    );
    digest(&root.host_path(STATE_FILE))
}

#[test]
fn upgrade_keeps_the_edited_config_and_the_state() {
    if !prerequisites_met() {
        return;
    }
    let debs = debs();
    let root = Root::with_package(&debs.first);
    root.set_public_url();
    let edited = root
        .read(CONFIG)
        .replace("#level = \"info\"", "level = \"debug\"");
    root.write(CONFIG, &edited);
    let state = create_state(&root);

    // No --force-conf* options and no standard input: a conffile prompt would fail this.
    let out = succeeded(root.install(&debs.upgrade), "dpkg -i (upgrade)");
    println!("upgrade:\n{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        root.installed_version().unwrap(),
        format!("install ok installed {}-2", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(root.read(CONFIG), edited);
    let path = root.host_path(STATE_FILE);
    assert_eq!(digest(&path), state, "the upgrade changed the state file");
    let (uid, _) = root.service_ids().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), uid);
    assert_eq!(
        std::fs::metadata(root.host_path(STATE_DIR))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    let out = succeeded(
        root.run_as_service(&["/usr/bin/lark-oncall", "check-config"]),
        "check-config",
    );
    assert!(text(&out.stdout).contains("level = \"debug\""));
    // The upgraded binary opens the old state file.
    create_state(&root);
}

#[test]
fn remove_keeps_state_and_config_and_purge_deletes_them() {
    if !prerequisites_met() {
        return;
    }
    let root = Root::with_package(&debs().first);
    root.set_public_url();
    let state = create_state(&root);

    succeeded(root.run(&["dpkg", "--remove", PKG]), "dpkg --remove");
    assert!(!root.host_path("/usr/bin/lark-oncall").exists());
    assert!(root.read(CONFIG).contains("\npublic_url = "));
    assert_eq!(digest(&root.host_path(STATE_FILE)), state);

    succeeded(root.run(&["dpkg", "--purge", PKG]), "dpkg --purge");
    assert!(!root.host_path(CONFIG).exists(), "purge kept the config");
    assert!(!root.host_path(STATE_DIR).exists(), "purge kept the state");
    assert!(root.installed_version().is_none());
}

/// The backup and restore steps of packaging/INSTALL.md, run as root, leave a state file the
/// service user can open.
#[test]
fn backup_and_restore_as_documented() {
    if !prerequisites_met() {
        return;
    }
    let root = Root::with_package(&debs().first);
    root.set_public_url();
    create_state(&root);
    succeeded(
        root.run(&["lark-oncall", "backup", "--out", "/root/lark-oncall-backup.redb"]),
        "backup",
    );
    create_state(&root);

    succeeded(
        root.run(&[
            "lark-oncall",
            "restore",
            "--from",
            "/root/lark-oncall-backup.redb",
        ]),
        "restore",
    );
    succeeded(
        root.run(&[
            "chown",
            "lark-oncall:lark-oncall",
            "/var/lib/lark-oncall/state.redb",
        ]),
        "chown",
    );
    // The replaced state is kept aside (opening a redb file rewrites it, so no byte comparison).
    assert!(root.host_path("/var/lib/lark-oncall/state.pre-restore").is_file());
    // The service user can open and write the restored state.
    create_state(&root);
}

/// `lark-oncall serve` run by the service user inside the root, stopped by SIGTERM when dropped.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts the installed binary on loopback, as the unit would, and waits until it is ready.
    fn start(root: &Root, log: PathBuf) -> Service {
        let addresses = root.host_path("/var/lib/lark-oncall/listen-addresses.json");
        let child = root
            .prepare(
                &[&root.service_userspec()],
                &[
                    "env",
                    "LARK_ONCALL_SERVER__LISTEN=127.0.0.1:0",
                    "/usr/bin/lark-oncall",
                    "serve",
                ],
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start serve");
        let mut service = Service { child, log };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !addresses.exists() {
            if let Some(status) = service.child.try_wait().unwrap() {
                panic!("serve exited with {status}: {}", service.log_text());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "serve is not ready: {}",
                service.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        service
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        use nix::sys::signal::{Signal, kill};
        let _ = kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGTERM,
        );
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
        }
    }
}

/// While the service runs it holds the state file: root and the service user administer it through
/// the CLI token (0600) in the state directory (0750), which no other user can reach.
#[test]
fn running_service_is_administered_by_root_and_the_service_user() {
    if !prerequisites_met() {
        return;
    }
    let root = Root::with_package(&debs().first);
    root.set_public_url();
    let logs = tempfile::tempdir().unwrap();
    let service = Service::start(&root, logs.path().join("serve.log"));

    let token = root.host_path("/var/lib/lark-oncall/cli-token");
    let (uid, _) = root.service_ids().unwrap();
    let meta = std::fs::metadata(&token).unwrap();
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (uid, 0o600));

    let create = ["lark-oncall", "admin", "create-token", "ops"];
    let out = succeeded(root.run(&create), "create-token as root");
    assert!(text(&out.stdout).trim().starts_with("lko_"), "{}", describe(&out));
    succeeded(root.run_as_service(&create), "create-token as the service user");
    succeeded(
        root.run(&["lark-oncall", "backup", "--out", "/root/online.redb"]),
        "backup as root while running",
    );
    // Any other user is stopped at the state directory's permissions.
    let out = root.command(&["--userspec=65534:65534"], &create);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("/var/lib/lark-oncall"),
        "{}",
        describe(&out)
    );

    let log = service.log_text();
    let status = service.stop();
    assert!(status.success(), "serve exited with {status}: {log}");
    assert!(!token.exists(), "the CLI token outlived the service");
}

/// `systemd-analyze` on the unit as installed (verify needs its ExecStart binary and user).
#[test]
fn installed_unit_passes_systemd_analyze() {
    if !prerequisites_met() {
        return;
    }
    let root = Root::with_package(&debs().first);
    let out = root.run(&["systemd-analyze", "verify", UNIT]);
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        describe(&out)
    );

    let out = succeeded(
        root.run(&["systemd-analyze", "security", "--offline=true", UNIT]),
        "security",
    );
    let report = text(&out.stdout);
    let overall = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for lark-oncall.service: "))
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| panic!("no overall score:\n{report}"));
    let mut words = overall.split_whitespace();
    let score: f64 = words.next().unwrap().parse().unwrap();
    let band = words.next().unwrap();
    println!("{report}");
    note(&format!(
        "systemd-analyze security on the installed unit: {score} {band}"
    ));
    assert!(
        ["OK", "SAFE", "PERFECT"].contains(&band),
        "exposure {score} {band} is worse than OK"
    );
}

/// The package's Debian changelog names the crate's version, so the two cannot drift apart.
#[test]
fn changelog_matches_the_crate_version() {
    let changelog =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/debian/changelog"))
            .unwrap();
    let first = changelog.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("lark-oncall ({}) ", deb_version())),
        "packaging/debian/changelog starts with {first:?}; add an entry for {}",
        deb_version()
    );
}

/// Every key the shipped config mentions (commented out) exists, and its example is the default
/// where the file says it is.
#[test]
fn shipped_config_documents_real_keys_and_defaults() {
    use lark_oncall::config::Config;
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config.toml")).unwrap();
    let as_shipped = Config::from_sources(&shipped, Vec::new()).expect("the shipped config parses");
    assert!(
        as_shipped.server.public_url.is_none(),
        "public_url must be left to the admin"
    );

    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all = Config::from_sources(&uncommented, Vec::new()).expect("every documented key is real");
    let defaults = Config::default();
    assert_eq!(all.server.listen, defaults.server.listen);
    assert_eq!(all.server.max_body_bytes, defaults.server.max_body_bytes);
    assert_eq!(all.storage.path, defaults.storage.path);
    assert_eq!(all.log.format, defaults.log.format);
    assert_eq!(all.log.level, defaults.log.level);
    assert!(
        all.server.public_url.is_some() && all.server.admin_listen.is_some() && all.server.tls_cert.is_some()
    );
}
