//! `sandbox`: files and processes in a workspace of the session's own.
//!
//! Berth runs one process per session (the default exclusive binding),
//! inside its process sandbox. The process makes a fresh workspace at
//! start ([`workspace`]), confines every path to it, runs commands there
//! ([`exec`], [`background`]) with `HOME` set to it, behind a Landlock wall
//! that hides every other session's workspace from them ([`wall`]) and,
//! when the session ends (stdin closes:
//! DELETE, idle expiry or shutdown; or SIGTERM), kills every process it
//! started ([`procs`]) and removes the workspace unless told to keep it.

pub mod background;
pub mod exec;
pub mod files;
pub mod options;
pub mod procs;
pub mod wall;
pub mod workspace;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};

use background::{Background, Info, Killed, Logs};
use exec::{ExecResult, Spec};
use options::Options;
use procs::Procs;
use workspace::{Workspace, normalize};

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ReadRequest {
    /// File path, relative to the workspace.
    pub path: String,
    /// Byte offset to start at (default 0).
    pub offset: Option<u64>,
    /// Bytes to read at most (default 262144, at most 2097152).
    pub limit: Option<usize>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct WriteRequest {
    /// File path, relative to the workspace.
    pub path: String,
    /// The content: text, or base64 when encoding is "base64".
    pub content: String,
    /// "utf-8" (default) or "base64".
    pub encoding: Option<String>,
    /// Append instead of replacing the file (default false).
    pub append: Option<bool>,
    /// Create missing parent directories (default true).
    pub create_dirs: Option<bool>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct EditRequest {
    /// File path, relative to the workspace.
    pub path: String,
    /// The exact text to replace; it must occur exactly once unless replace_all.
    pub old_text: String,
    /// The replacement.
    pub new_text: String,
    /// Replace every occurrence (default false).
    pub replace_all: Option<bool>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ListRequest {
    /// Directory, relative to the workspace (default ".").
    pub path: Option<String>,
    /// List subdirectories too (default false).
    pub recursive: Option<bool>,
    /// Entries to return at most (default 1000, at most 10000).
    pub max_entries: Option<usize>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct PathRequest {
    /// Path, relative to the workspace.
    pub path: String,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct DeleteRequest {
    /// Path, relative to the workspace.
    pub path: String,
    /// Delete a directory with everything in it (default false).
    pub recursive: Option<bool>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct SearchRequest {
    /// Directory to search, relative to the workspace (default ".").
    pub path: Option<String>,
    /// Glob over paths below `path`, e.g. "*.rs" or "src/**/*.toml" (default "*": everything; `*` also crosses `/`).
    pub pattern: Option<String>,
    /// Look for this in file contents (a regular expression unless fixed_strings); matches come back as path, line, text.
    pub content: Option<String>,
    /// Treat `content` as plain text (default false).
    pub fixed_strings: Option<bool>,
    /// Ignore case in pattern and content (default false).
    pub case_insensitive: Option<bool>,
    /// Results to return at most (default 200, at most 5000).
    pub max_results: Option<usize>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct ExecRequest {
    /// The program and its arguments, e.g. ["ls", "-la"]. No shell: use ["sh", "-c", "..."] for one.
    pub argv: Vec<String>,
    /// Working directory, relative to the workspace (default: the workspace).
    pub cwd: Option<String>,
    /// Variables added to the environment.
    pub env: Option<BTreeMap<String, String>>,
    /// Text written to the command's stdin (default: none, stdin is /dev/null).
    pub stdin: Option<String>,
    /// Timeout in milliseconds (default: the server's exec_timeout); on expiry the whole process tree is killed.
    pub timeout_ms: Option<u64>,
    /// Bytes kept per output stream (default and maximum: the server's output_limit).
    pub output_limit: Option<usize>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct StartRequest {
    /// The program and its arguments. No shell: use ["sh", "-c", "..."] for one.
    pub argv: Vec<String>,
    /// Working directory, relative to the workspace (default: the workspace).
    pub cwd: Option<String>,
    /// Variables added to the environment.
    pub env: Option<BTreeMap<String, String>>,
    /// Text written to the process's stdin, which is then closed.
    pub stdin: Option<String>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct LogsRequest {
    /// The process id from process_start (e.g. "p1").
    pub id: String,
    /// Offset in the stdout stream to read from (default 0; pass back stdout_next_offset).
    pub stdout_offset: Option<u64>,
    /// Offset in the stderr stream to read from (default 0; pass back stderr_next_offset).
    pub stderr_offset: Option<u64>,
    /// Bytes to return at most, both streams together (default 65536, at most 1048576).
    pub max_bytes: Option<usize>,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct IdRequest {
    /// The process id from process_start (e.g. "p1").
    pub id: String,
}

#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct ProcessList {
    pub processes: Vec<Info>,
}

/// The server of one session.
#[derive(Clone)]
pub struct Sandbox {
    ws: Arc<Workspace>,
    procs: Arc<Procs>,
    background: Arc<Background>,
    options: Arc<Options>,
    tool_router: ToolRouter<Self>,
}

/// Runs `f` on the blocking pool with the workspace (file work can be slow).
async fn blocking<T: Send + 'static>(
    ws: &Arc<Workspace>,
    f: impl FnOnce(&Workspace) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let ws = ws.clone();
    tokio::task::spawn_blocking(move || f(&ws))
        .await
        .unwrap_or_else(|e| Err(format!("internal error: {e}")))
}

impl Sandbox {
    pub fn new(ws: Arc<Workspace>, procs: Arc<Procs>, options: Options) -> Sandbox {
        let background = Arc::new(Background::new(procs.clone(), options.output_limit));
        Sandbox {
            ws,
            procs,
            background,
            options: Arc::new(options),
            tool_router: Self::tool_router(),
        }
    }

    fn spec(
        &self,
        argv: Vec<String>,
        cwd: Option<String>,
        env: Option<BTreeMap<String, String>>,
        stdin: Option<String>,
    ) -> Result<Spec, String> {
        let env: Vec<(String, String)> = env.unwrap_or_default().into_iter().collect();
        exec::check(&argv, &env)?;
        // HOME is the workspace (the server's own HOME is hidden from
        // commands); the client's env may still set another.
        let env = std::iter::once(("HOME".to_string(), self.ws.path().display().to_string()))
            .chain(env)
            .collect();
        let cwd_arg = cwd.unwrap_or_else(|| ".".into());
        let rel = normalize(&cwd_arg).map_err(|e| format!("cwd: {e}"))?;
        let cwd = self
            .ws
            .open(
                &rel,
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                Mode::empty(),
                &cwd_arg,
            )
            .map_err(|e| format!("cwd: {e}"))?;
        Ok(Spec {
            argv,
            cwd,
            env,
            stdin,
        })
    }
}

#[tool_router]
impl Sandbox {
    #[tool(
        description = "Read a file of the workspace. Text comes back as UTF-8; other bytes as base64 (binary: true). Use offset/limit to page through big files.",
        annotations(read_only_hint = true)
    )]
    async fn fs_read(
        &self,
        Parameters(r): Parameters<ReadRequest>,
    ) -> Result<Json<files::ReadResult>, String> {
        blocking(&self.ws, move |ws| {
            files::read(ws, &r.path, r.offset.unwrap_or(0), r.limit)
        })
        .await
        .map(Json)
    }

    #[tool(
        description = "Write a file of the workspace (replacing it, or appending), creating parent directories as needed."
    )]
    async fn fs_write(
        &self,
        Parameters(r): Parameters<WriteRequest>,
    ) -> Result<Json<files::WriteResult>, String> {
        let base64 = match r
            .encoding
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("utf-8") | Some("utf8") | Some("text") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(format!(
                    "encoding {other:?} is not known: use \"utf-8\" or \"base64\""
                ));
            }
        };
        blocking(&self.ws, move |ws| {
            files::write(
                ws,
                &r.path,
                &r.content,
                base64,
                r.append.unwrap_or(false),
                r.create_dirs.unwrap_or(true),
            )
        })
        .await
        .map(Json)
    }

    #[tool(
        description = "Replace old_text with new_text in a text file of the workspace. old_text must occur exactly once (the error says how often it does) unless replace_all is set."
    )]
    async fn fs_edit(
        &self,
        Parameters(r): Parameters<EditRequest>,
    ) -> Result<Json<files::EditResult>, String> {
        blocking(&self.ws, move |ws| {
            files::edit(
                ws,
                &r.path,
                &r.old_text,
                &r.new_text,
                r.replace_all.unwrap_or(false),
            )
        })
        .await
        .map(Json)
    }

    #[tool(
        description = "List a directory of the workspace (default: its top), optionally recursively. Symlinks are listed, not followed.",
        annotations(read_only_hint = true)
    )]
    async fn fs_list(
        &self,
        Parameters(r): Parameters<ListRequest>,
    ) -> Result<Json<files::ListResult>, String> {
        let max = r.max_entries.unwrap_or(1000).clamp(1, 10_000);
        let path = r.path.unwrap_or_else(|| ".".into());
        blocking(&self.ws, move |ws| {
            files::list(ws, &path, r.recursive.unwrap_or(false), max)
        })
        .await
        .map(Json)
    }

    #[tool(
        description = "Type, size, permissions and modification time (ISO 8601) of a path of the workspace; for a symlink, its target.",
        annotations(read_only_hint = true)
    )]
    async fn fs_stat(
        &self,
        Parameters(r): Parameters<PathRequest>,
    ) -> Result<Json<files::StatResult>, String> {
        blocking(&self.ws, move |ws| files::stat(ws, &r.path))
            .await
            .map(Json)
    }

    #[tool(
        description = "Delete a file, symlink or directory of the workspace (a directory with contents needs recursive: true).",
        annotations(destructive_hint = true)
    )]
    async fn fs_delete(
        &self,
        Parameters(r): Parameters<DeleteRequest>,
    ) -> Result<Json<files::DeleteResult>, String> {
        blocking(&self.ws, move |ws| {
            files::delete(ws, &r.path, r.recursive.unwrap_or(false))
        })
        .await
        .map(Json)
    }

    #[tool(
        description = "Find paths of the workspace by glob (pattern), and optionally lines in those files matching a regular expression or text (content): results are path, line number and line.",
        annotations(read_only_hint = true)
    )]
    async fn fs_search(
        &self,
        Parameters(r): Parameters<SearchRequest>,
    ) -> Result<Json<files::SearchResult>, String> {
        blocking(&self.ws, move |ws| {
            files::search(
                ws,
                &files::SearchQuery {
                    path: r.path.as_deref().unwrap_or("."),
                    glob: r.pattern.as_deref().unwrap_or("*"),
                    content: r.content.as_deref(),
                    fixed_strings: r.fixed_strings.unwrap_or(false),
                    case_insensitive: r.case_insensitive.unwrap_or(false),
                    max_results: r.max_results.unwrap_or(200).clamp(1, 5000),
                },
            )
        })
        .await
        .map(Json)
    }

    #[tool(
        description = "Run a command in the workspace and wait for it: argv (no shell unless you run one, e.g. [\"sh\", \"-c\", \"...\"]), optional cwd, env, stdin, timeout_ms. Returns exit_code or signal, stdout, stderr (capped; truncated flags), timed_out and duration_ms. On timeout, and when the command exits, every process it started is killed: use process_start for servers and other long-running work."
    )]
    async fn exec(
        &self,
        Parameters(r): Parameters<ExecRequest>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ExecResult>, String> {
        let max = self.options.exec_timeout_max;
        let timeout = match r.timeout_ms {
            None => self.options.exec_timeout,
            Some(0) => return Err("timeout_ms must be more than 0".into()),
            Some(ms) if Duration::from_millis(ms) > max => {
                return Err(format!(
                    "timeout_ms {ms} is above this server's maximum of {} ms (option exec_timeout_max); use process_start for longer work",
                    max.as_millis()
                ));
            }
            Some(ms) => Duration::from_millis(ms),
        };
        let cap = r
            .output_limit
            .unwrap_or(self.options.output_limit)
            .clamp(1, self.options.output_limit);
        let spec = self.spec(r.argv, r.cwd, r.env, r.stdin)?;
        exec::exec(&self.procs, spec, timeout, cap, context.ct.clone())
            .await
            .map(Json)
    }

    #[tool(
        description = "Start a command in the background in the workspace (same argv, cwd, env, stdin as exec, no timeout). Returns its id; read its output with process_logs, stop it with process_kill. It is killed when the session ends."
    )]
    async fn process_start(
        &self,
        Parameters(r): Parameters<StartRequest>,
    ) -> Result<Json<Info>, String> {
        let spec = self.spec(r.argv, r.cwd, r.env, r.stdin)?;
        self.background.start(spec).map(Json)
    }

    #[tool(
        description = "The background processes of this session: id, pid, argv, state (running or exited, with exit_code or signal), start and end times, output sizes.",
        annotations(read_only_hint = true)
    )]
    async fn process_list(&self) -> Json<ProcessList> {
        Json(ProcessList {
            processes: self.background.list(),
        })
    }

    #[tool(
        description = "Output of a background process since the given offsets (the last output_limit bytes of each stream are kept). Pass back stdout_next_offset and stderr_next_offset to follow it.",
        annotations(read_only_hint = true)
    )]
    async fn process_logs(
        &self,
        Parameters(r): Parameters<LogsRequest>,
    ) -> Result<Json<Logs>, String> {
        let max = r.max_bytes.unwrap_or(64 << 10).clamp(2, 1 << 20);
        self.background
            .logs(
                &r.id,
                r.stdout_offset.unwrap_or(0),
                r.stderr_offset.unwrap_or(0),
                max,
            )
            .map(Json)
    }

    #[tool(
        description = "Kill a background process and every process it started (SIGKILL), then report its state.",
        annotations(destructive_hint = true)
    )]
    async fn process_kill(
        &self,
        Parameters(r): Parameters<IdRequest>,
    ) -> Result<Json<Killed>, String> {
        self.background.kill(&r.id).await.map(Json)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Sandbox {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("berth-sandbox", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Berth's sandbox: a private workspace directory for this session, with tools to work in it. \
                 Files: fs_read, fs_write, fs_edit, fs_list, fs_stat, fs_delete, fs_search. \
                 Commands: exec (run and wait, with a timeout), process_start / process_list / process_logs / process_kill (background). \
                 Every path is relative to the workspace; absolute paths, `..` above it and symlinks leading out of it are refused. \
                 Commands run with the workspace as their working directory and HOME; \
                 they see the rest of the system read-only (plus /tmp), and never another session's workspace. \
                 The workspace and every process started in it are removed when the session ends.",
            )
    }
}

/// Why serving stopped.
enum Ending {
    /// stdin closed (or the protocol failed): the session is over.
    Closed(anyhow::Result<()>),
    Signal(&'static str),
}

pub async fn run() -> anyhow::Result<()> {
    let options = Options::from_env().map_err(anyhow::Error::msg)?;
    // Outside Berth's sandbox, orphans must come back here to be found and
    // reaped; inside it this process is PID 1 and they do anyway.
    if let Err(e) = Procs::become_subreaper()
        && std::process::id() != 1
    {
        eprintln!("warning: {e}: processes that daemonize may escape a timeout");
    }
    let ws = Arc::new(
        Workspace::create(&options.workspace_root, options.keep_workspace)
            .map_err(anyhow::Error::msg)?,
    );
    eprintln!("workspace {}", ws.path().display());
    let procs = Arc::new(Procs::new());
    // After the sweep (done by create), before the first command.
    match wall::build(ws.path(), &options.workspace_root).map_err(anyhow::Error::msg)? {
        Some(wall) => procs.set_wall(wall),
        None => eprintln!(
            "warning: this kernel has no Landlock: commands are not walled off and can read other sessions' workspaces"
        ),
    }
    procs.start_reaper();
    let keep = options.keep_workspace;
    let server = Sandbox::new(ws.clone(), procs.clone(), options);

    let serving = async move {
        let service = server.serve(rmcp::transport::stdio()).await?;
        service.waiting().await?;
        anyhow::Ok(())
    };
    let ending = tokio::select! {
        result = serving => Ending::Closed(result),
        name = termination() => Ending::Signal(name),
    };
    finish(&procs, &ws, keep).await;
    match ending {
        Ending::Closed(result) => result,
        Ending::Signal(name) => {
            eprintln!("stopped by {name}");
            // The stdin reader is a blocking thread that a runtime shutdown
            // would wait for: leave now, everything is cleaned up.
            std::process::exit(0);
        }
    }
}

/// Waits for SIGTERM, SIGINT or SIGHUP.
async fn termination() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    }
}

/// The session is over: kill every process it started, remove the workspace.
async fn finish(procs: &Arc<Procs>, ws: &Arc<Workspace>, keep: bool) {
    let killer = procs.clone();
    let killed = tokio::task::spawn_blocking(move || killer.kill_all())
        .await
        .unwrap_or(0);
    if killed > 0 {
        eprintln!("killed {killed} process(es) left by the session");
    }
    if keep {
        eprintln!("keeping workspace {}", ws.path().display());
        return;
    }
    let ws = ws.clone();
    let path = ws.path().to_owned();
    match tokio::task::spawn_blocking(move || ws.remove()).await {
        Ok(Ok(())) => eprintln!("removed workspace {}", path.display()),
        Ok(Err(e)) => eprintln!("{e}"),
        Err(e) => eprintln!(
            "cannot remove workspace {}: {e}",
            Path::new(&path).display()
        ),
    }
}
