//! `hatchery dev`: one command from nothing to a node serving a `dev` tenant.
//!
//! It finds PostgreSQL (`DATABASE_URL`, else a local server, else a private cluster under
//! `.hatchery/postgres` started from the system's binaries and stopped on exit), runs a node
//! exactly like `serve`, creates the `dev` tenant and a token the CLI finds in `.hatchery/token`,
//! and with `--examples` builds and deploys the examples. It never changes a cluster it did
//! not create.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::api_client::DEV_DIR;
use super::serve::{NodeArgs, Server};
use crate::api::{hash_token, new_token};
use crate::db::Db;
use crate::db::tenant::{tenant_create, tenant_get};
use crate::db::token::{NewTokenParams, token_create, token_tenant};
use crate::scheduler::deploy_module;

/// The id of the tenant `hatchery dev` creates, fixed so every start finds the same one.
pub const DEV_TENANT: Uuid = Uuid::from_u128(0x6861_7463_6865_7279_2d64_6576_0000_0001);

/// Name of the tenant `hatchery dev` creates.
pub const DEV_TENANT_NAME: &str = "dev";

/// The examples `--examples` builds and deploys.
const EXAMPLES: [&str; 4] = ["hello", "etl", "fanout", "flow"];

/// Arguments of `hatchery dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// PostgreSQL to use [default: a server on 127.0.0.1:5432, else a private cluster under
    /// .hatchery/postgres].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Port of the local PostgreSQL server to look for before starting a private cluster.
    #[arg(long, env = "HATCHERY_DEV_PG_PORT", default_value_t = 5432)]
    pub postgres_port: u16,
    /// Build the examples (hello, etl, fanout, flow) and deploy them to the dev tenant.
    #[arg(long)]
    pub examples: bool,
    /// The Hatchery workspace whose examples to build [default: found by walking up from the
    /// current directory, then from the binary].
    #[arg(long)]
    pub examples_dir: Option<PathBuf>,
    /// Only find (or start) PostgreSQL as `dev` does, print its URL and exit, leaving a private
    /// cluster running: the one discovery `scripts/postgres-env` uses too.
    #[arg(long)]
    pub print_database_url: bool,
    /// Every option of `hatchery serve` (but its database): the node runs as `serve` would
    /// run it, with an admin token and a fleet key kept under .hatchery when none is given.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Runs `hatchery dev` until SIGTERM or ctrl-c.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let state_dir = std::env::current_dir()
        .context("cannot read the current directory")?
        .join(DEV_DIR);
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    // Tokens and a database live here: keep them out of version control.
    let ignore = state_dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "*\n")
            .with_context(|| format!("cannot write {}", ignore.display()))?;
    }

    let database = find_database(&args, &state_dir).await?;
    if args.print_database_url {
        println!("{}", database.url);
        if let Some(cluster) = database.cluster {
            // Left running for whoever asked; the next `dev` adopts it.
            std::mem::forget(cluster);
        }
        return Ok(());
    }
    let mut node = args.node.clone();
    let admin_token = match node.admin_token.take() {
        Some(token) if !token.is_empty() => token,
        _ => {
            let (token, _) = new_token().map_err(|e| anyhow::anyhow!("{}", e.message))?;
            write_secret(&state_dir.join("admin-token"), &token)?;
            token
        }
    };
    // The fleet key of this development cluster: kept with its state, so secrets stored in
    // one session open in the next.
    let secret_key = match node.secret_key.take() {
        Some(key) if !key.is_empty() => key,
        _ => {
            let path = state_dir.join("secret-key");
            match std::fs::read_to_string(&path) {
                Ok(key) if key.trim().len() >= 32 => key.trim().to_owned(),
                _ => {
                    let mut bytes = [0u8; 32];
                    getrandom::fill(&mut bytes)
                        .map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
                    let key = hex::encode(bytes);
                    write_secret(&path, &key)?;
                    key
                }
            }
        }
    };
    node.admin_token = Some(admin_token);
    node.secret_key = Some(secret_key);

    let server = Server::start(&database.url, &node).await?;
    let addr = server.addr();
    println!("listening on http://{addr}");
    let db = server.db().clone();
    let runtime = server.runtime().clone();
    let token = dev_token(&db, &state_dir.join("token")).await?;
    let url = format!("http://{}", connectable(addr));
    std::fs::write(state_dir.join("url"), format!("{url}\n"))
        .with_context(|| format!("cannot write {}", state_dir.join("url").display()))?;
    let serving = tokio::spawn(server.run());

    let mut deployed = Vec::new();
    if args.examples {
        let root = match &args.examples_dir {
            Some(dir) => dir.clone(),
            None => find_workspace()?,
        };
        for (name, path) in build_examples(&root).await? {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let module = deploy_module(&db, &runtime, DEV_TENANT, &bytes)
                .await
                .with_context(|| format!("cannot deploy the `{name}` example"))?;
            let workflows: Vec<&str> = module.workflows.iter().map(|w| w.name.as_str()).collect();
            deployed.push(format!("{name} ({})", workflows.join(", ")));
        }
        for (name, path) in build_polyglot_examples(&root).await {
            let deploy = async {
                let bytes = std::fs::read(&path)?;
                anyhow::Ok(deploy_module(&db, &runtime, DEV_TENANT, &bytes).await?)
            };
            match deploy.await {
                Ok(module) => {
                    let workflows: Vec<&str> =
                        module.workflows.iter().map(|w| w.name.as_str()).collect();
                    deployed.push(format!("{name} ({})", workflows.join(", ")));
                }
                Err(e) => eprintln!("the `{name}` example was not deployed: {e:#}"),
            }
        }
    }

    print_ready(&url, &token, &database, &deployed, &state_dir);
    let served = serving.await.context("the node stopped abnormally")?;
    drop(database);
    served
}

/// Prints where everything is and how to start a run.
fn print_ready(url: &str, token: &str, database: &Database, deployed: &[String], dir: &Path) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out);
    let _ = writeln!(out, "Hatchery dev is ready.");
    let _ = writeln!(out, "  url:      {url}");
    let _ = writeln!(
        out,
        "  token:    {token}  (saved in {}; the CLI reads it from there)",
        dir.join("token").display()
    );
    let _ = writeln!(out, "  database: {}", database.describe());
    if deployed.is_empty() {
        let _ = writeln!(
            out,
            "  modules:  none deployed yet: `hatchery deploy <file.wasm>` (or restart with --examples)"
        );
    } else {
        let _ = writeln!(out, "  modules:  {}", deployed.join(", "));
    }
    // The CLI that started this node works from anywhere by its full path.
    let cli = std::env::current_exe()
        .map_or_else(|_| "hatchery".to_owned(), |path| path.display().to_string());
    let _ = writeln!(out, "  cli:      {cli}");
    let _ = writeln!(out);
    if deployed.iter().any(|module| module.starts_with("hello ")) {
        let _ = writeln!(out, "Start a `hello` run and wait for its output:");
        let _ = writeln!(
            out,
            "  curl -sS -X POST '{url}/api/v1/workflows/hello/runs?wait=30' -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"input\":{{\"name\":\"Ada\"}}}}'"
        );
        let _ = writeln!(out, "or, from this directory:");
        let _ = writeln!(
            out,
            "  {cli} run hello --input '{{\"name\":\"Ada\"}}' --wait"
        );
    } else {
        let _ = writeln!(
            out,
            "Deploy a module, then start a run and wait for its output:"
        );
        let _ = writeln!(out, "  {cli} deploy <file.wasm>");
        let _ = writeln!(out, "  {cli} run <workflow> --input '{{}}' --wait");
    }
    let _ = writeln!(
        out,
        "Watch runs in the dashboard: {url}/ (sign in with the token above)"
    );
    let _ = writeln!(out, "Stop with ctrl-c.");
    let _ = out.flush();
}

/// An address a client can connect to: a wildcard listen address becomes loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        addr => addr,
    }
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The mode above only applies to a new file.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{secret}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The `dev` tenant's token: the one in `path` if it is still valid, else a new one written
/// there. Creates the tenant on first use.
async fn dev_token(db: &Db, path: &Path) -> anyhow::Result<String> {
    let mut conn = db
        .pool
        .acquire()
        .await
        .context("cannot reach the database")?;
    if tenant_create(&mut conn, DEV_TENANT, DEV_TENANT_NAME)
        .await?
        .is_none()
    {
        // Either `hatchery dev` made it before, or someone else took the name.
        if tenant_get(&mut conn, DEV_TENANT).await?.is_none() {
            bail!(
                "a tenant named `{DEV_TENANT_NAME}` exists already and was not made by `hatchery dev`; use another database (DATABASE_URL)"
            );
        }
    }
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if !existing.is_empty()
            && token_tenant(&mut conn, &hash_token(existing)).await? == Some(DEV_TENANT)
        {
            return Ok(existing.to_owned());
        }
    }
    let (token, hash) = new_token().map_err(|e| anyhow::anyhow!("{}", e.message))?;
    token_create(
        &mut conn,
        &NewTokenParams {
            tenant_id: DEV_TENANT,
            id: Uuid::now_v7(),
            name: "hatchery dev",
            hash: &hash,
        },
    )
    .await?;
    write_secret(path, &token)?;
    Ok(token)
}

/// The database `dev` runs against, and the private cluster to stop on drop, if it made one.
struct Database {
    url: String,
    origin: &'static str,
    cluster: Option<Cluster>,
}

impl Database {
    fn describe(&self) -> String {
        match &self.cluster {
            Some(cluster) => format!(
                "{} (private cluster in {}, stopped on exit)",
                self.url,
                cluster.dir.display()
            ),
            None => format!("{} ({})", self.url, self.origin),
        }
    }
}

/// The database `dev` uses on a local server.
const DEV_DATABASE: &str = "hatchery_dev";

/// `DATABASE_URL`, else a server on the local port that lets `postgres` in, else a private
/// cluster.
async fn find_database(args: &DevArgs, state_dir: &Path) -> anyhow::Result<Database> {
    if let Some(url) = args.database_url.clone().filter(|u| !u.is_empty()) {
        return Ok(Database {
            url,
            origin: "DATABASE_URL",
            cluster: None,
        });
    }
    let port = args.postgres_port;
    if !answers(port) && port == 5432 {
        start_system_clusters().await;
    }
    if answers(port) {
        let server = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        match tokio::time::timeout(Duration::from_secs(10), Db::connect(&server, 1)).await {
            Ok(Ok(db)) => {
                // A database of its own, so dev tables never land in `postgres`.
                let mut conn = db.pool.acquire().await?;
                crate::db::database_ensure(&mut conn, DEV_DATABASE).await?;
                drop(conn);
                db.pool.close().await;
                return Ok(Database {
                    url: format!("postgres://postgres@127.0.0.1:{port}/{DEV_DATABASE}"),
                    origin: "the local server",
                    cluster: None,
                });
            }
            Ok(Err(e)) => eprintln!(
                "a PostgreSQL server answers on 127.0.0.1:{port} but does not let `postgres` in ({e}); starting a private cluster instead (set DATABASE_URL to use that server)"
            ),
            Err(_) => eprintln!(
                "a server answers on 127.0.0.1:{port} but did not complete a PostgreSQL login; starting a private cluster instead"
            ),
        }
    }
    let cluster = tokio::task::spawn_blocking({
        let state_dir = state_dir.to_owned();
        move || Cluster::start(&state_dir)
    })
    .await
    .context("starting the private cluster panicked")??;
    Ok(Database {
        url: format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port),
        origin: "private cluster",
        cluster: Some(cluster),
    })
}

/// Starts the system's PostgreSQL clusters (Debian's `pg_ctlcluster`, one per version under
/// /etc/postgresql) when they are installed but stopped, as after a reboot of a container
/// without an init system, and waits until 127.0.0.1:5432 answers (at most 10 s). Failures
/// are silent: a private cluster comes next.
async fn start_system_clusters() {
    let Ok(versions) = std::fs::read_dir("/etc/postgresql") else {
        return;
    };
    let mut started = false;
    for version in versions.flatten() {
        let version = version.file_name().to_string_lossy().into_owned();
        let mut command = Command::new("pg_ctlcluster");
        command
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(Ok(status)) = tokio::task::spawn_blocking(move || command.status()).await {
            started |= status.success();
        }
    }
    if started {
        for _ in 0..20 {
            if answers(5432) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .is_ok()
}

/// A PostgreSQL cluster of `hatchery dev`'s own, running as long as this value lives.
#[derive(Debug)]
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Run the binaries as the `postgres` user (we are root, which PostgreSQL refuses).
    as_postgres: bool,
}

impl Cluster {
    /// Creates (first time) and starts the cluster on a free port.
    fn start(state_dir: &Path) -> anyhow::Result<Self> {
        let bin = postgres_bin().ok_or_else(|| {
            anyhow::anyhow!(
                "no PostgreSQL server answers on 127.0.0.1 and no PostgreSQL binaries were found (initdb on PATH or /usr/lib/postgresql/*/bin).\n\
                 Install them (Debian/Ubuntu: sudo apt-get install postgresql) or set DATABASE_URL to a server."
            )
        })?;
        let as_postgres = is_root();
        let mut dir = state_dir.join("postgres");
        if as_postgres {
            ensure_postgres_user()?;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            chown_postgres(&dir)?;
            if !postgres_can_use(&dir) {
                // The `postgres` user cannot reach the current directory (e.g. under a 0700
                // home): keep the cluster where it can.
                let _ = std::fs::remove_dir(&dir);
                let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
                dir = std::env::temp_dir()
                    .join(format!("hatchery-dev-{}", hex::encode(&digest[..6])));
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
                chown_postgres(&dir)?;
                eprintln!(
                    "the postgres user cannot reach {}: the private cluster lives in {}",
                    state_dir.display(),
                    dir.display()
                );
            }
        } else {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut cluster = Self {
            bin,
            dir,
            port: 0,
            as_postgres,
        };
        if !cluster.dir.join("PG_VERSION").exists() {
            eprintln!(
                "creating a PostgreSQL cluster in {} (once)",
                cluster.dir.display()
            );
            let dir = cluster.dir.display().to_string();
            cluster.run(
                "initdb",
                &[
                    "-D",
                    &dir,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                ],
            )?;
        }
        if let Some(port) = cluster.running_port() {
            // Left running by a `dev` that was killed: adopt it.
            cluster.port = port;
            return Ok(cluster);
        }
        cluster.port = free_port()?;
        let dir = cluster.dir.display().to_string();
        let log = cluster.dir.join("server.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''",
            cluster.port
        );
        cluster.run(
            "pg_ctl",
            &[
                "-D", &dir, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        )?;
        eprintln!(
            "started a private PostgreSQL on 127.0.0.1:{} ({})",
            cluster.port, dir
        );
        Ok(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Runs a PostgreSQL binary, failing with its output when it fails.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            );
        }
        Ok(())
    }

    /// The port of the cluster if its postmaster is already running.
    fn running_port(&self) -> Option<u16> {
        let dir = self.dir.display().to_string();
        let status = self
            .command("pg_ctl")
            .args(["-D", &dir, "status"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        if !status.success() {
            return None;
        }
        // postmaster.pid: pid, data dir, start time, port, …
        let pid_file = std::fs::read_to_string(self.dir.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn stop(&self) {
        let dir = self.dir.display().to_string();
        match self.run("pg_ctl", &["-D", &dir, "-m", "fast", "-w", "stop"]) {
            Ok(()) => eprintln!("stopped the private PostgreSQL"),
            Err(e) => eprintln!("cannot stop the private PostgreSQL: {e:#}"),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory of the system's PostgreSQL server binaries: `initdb`'s on PATH, else the
/// newest `/usr/lib/postgresql/*/bin`.
fn postgres_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if !initdb.is_file() {
                continue;
            }
            if has_tools(&dir) {
                return Some(dir);
            }
            // A lone symlink: use the directory it points into.
            if let Some(real) = std::fs::canonicalize(&initdb)
                .ok()
                .and_then(|p| p.parent().map(Path::to_owned))
                .filter(|d| has_tools(d))
            {
                return Some(real);
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map_or_else(
        |_| {
            Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
        },
        |meta| meta.uid() == 0,
    )
}

fn ensure_postgres_user() -> anyhow::Result<()> {
    let exists = Command::new("id")
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        return Ok(());
    }
    eprintln!("creating the `postgres` system user to run PostgreSQL (it refuses to run as root)");
    let status = Command::new("useradd")
        .args(["--system", "--no-create-home", "postgres"])
        .status()
        .context("cannot run useradd")?;
    if !status.success() {
        bail!("useradd postgres failed ({status})");
    }
    Ok(())
}

fn chown_postgres(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .arg("postgres")
        .arg(dir)
        .status()
        .context("cannot run chown")?;
    if !status.success() {
        bail!("chown postgres {} failed ({status})", dir.display());
    }
    Ok(())
}

/// Whether the `postgres` user can write into `dir` (and so reach it).
fn postgres_can_use(dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-w"])
        .arg(dir)
        .arg("-a")
        .arg("-x")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A TCP port free on 127.0.0.1 right now.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The Hatchery workspace: the first directory with a `Cargo.toml` declaring `[workspace]`
/// and an `examples/hello`, walking up from the current directory, then from the binary.
fn find_workspace() -> anyhow::Result<PathBuf> {
    let is_workspace = |dir: &Path| {
        dir.join("examples").join("hello").is_dir()
            && std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|l| l.trim() == "[workspace]"))
    };
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    for start in starts.into_iter().flatten() {
        if let Some(dir) = start.ancestors().find(|dir| is_workspace(dir)) {
            return Ok(dir.to_owned());
        }
    }
    bail!(
        "cannot find the Hatchery workspace (a Cargo.toml with [workspace] and examples/): run from inside it or pass --examples-dir"
    )
}

/// Builds the Python and JavaScript examples when their pinned toolchains are installed
/// (`scripts/polyglot-tools`, which the test build runs); returns (name, path of the `.wasm`).
/// Without the toolchains it says how to get them and builds nothing.
async fn build_polyglot_examples(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let tools = root.join("target").join("polyglot");
    let componentize_py = tools.join("venv/bin/componentize-py");
    let componentize_js = tools.join("js/node_modules/.bin/componentize-js");
    if !componentize_py.exists() || !componentize_js.exists() {
        eprintln!(
            "the Python and JavaScript examples are skipped: `scripts/polyglot-tools` installs their toolchains"
        );
        return Vec::new();
    }
    let out = tools.join("examples");
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("the Python and JavaScript examples are skipped: {e}");
        return Vec::new();
    }
    eprintln!("building the Python and JavaScript examples");
    let mut python = Command::new(componentize_py);
    python
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args([
            "-d",
            "guest-sdk/python/wit",
            "-w",
            "task-module",
            "componentize",
            "app",
        ])
        .args([
            "-p",
            "guest-sdk/python",
            "-p",
            "examples/python-hello",
            "-o",
        ])
        .arg(out.join("python-hello.wasm"));
    let mut js = Command::new(componentize_js);
    js.args([
        "examples/js-hello/app.js",
        "--wit",
        "guest-sdk/js/wit",
        "-n",
        "task-module",
        "-o",
    ])
    .arg(out.join("js-hello.wasm"));
    let mut built = Vec::new();
    for (name, mut command) in [("python-hello", python), ("js-hello", js)] {
        command.current_dir(root).stdout(Stdio::null());
        let status = tokio::task::spawn_blocking(move || command.status()).await;
        match status {
            Ok(Ok(status)) if status.success() => {
                built.push((name, out.join(format!("{name}.wasm"))));
            }
            _ => eprintln!("building the `{name}` example failed; it is not deployed"),
        }
    }
    built
}

/// Builds the examples with the `guest` profile; returns (name, path of the `.wasm`).
async fn build_examples(root: &Path) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    eprintln!("building the examples in {}", root.display());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--profile", "guest", "--target", "wasm32-wasip2"])
        .stdout(Stdio::null());
    for example in EXAMPLES {
        command.args(["-p", example]);
    }
    let status = tokio::task::spawn_blocking(move || command.status())
        .await
        .context("building the examples panicked")?
        .context("cannot run cargo")?;
    if !status.success() {
        bail!(
            "building the examples failed ({status}); is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`"
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let out = target.join("wasm32-wasip2").join("guest");
    Ok(EXAMPLES
        .iter()
        .map(|name| (*name, out.join(format!("{name}.wasm"))))
        .collect())
}
