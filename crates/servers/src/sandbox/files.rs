//! The file tools. Every lookup starts from the workspace descriptor and is
//! resolved by the kernel beneath it ([`Workspace::open`]); walks (list,
//! search, recursive delete) then descend only into real subdirectories
//! (`O_NOFOLLOW`), never through symlinks.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use serde::Serialize;

use super::workspace::{Workspace, display, normalize, refusal};

/// `fs_read` returns at most this much per call.
pub const READ_MAX: usize = 2 << 20;
pub const READ_DEFAULT: usize = 256 << 10;
/// `fs_edit` works on files up to this size.
const EDIT_MAX: u64 = 16 << 20;
/// `fs_search` looks into files up to this size.
const SEARCH_FILE_MAX: u64 = 8 << 20;
/// Walks stop after this many entries.
const WALK_MAX: usize = 200_000;
const DEPTH_MAX: usize = 64;
/// A matched line is cut to this many characters.
const LINE_MAX: usize = 400;

fn kind(stat: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFIFO => "fifo",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "char_device",
        SFlag::S_IFBLK => "block_device",
        _ => "unknown",
    }
}

fn mtime(stat: &FileStat) -> String {
    let t = UNIX_EPOCH
        + Duration::from_secs(stat.st_mtime.max(0) as u64)
        + Duration::from_nanos(stat.st_mtime_nsec.clamp(0, 999_999_999) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The path shown in results: relative to the workspace.
fn shown(rel: &Path) -> String {
    display(rel.as_os_str())
}

fn as_file(fd: OwnedFd) -> std::fs::File {
    std::fs::File::from(fd)
}

/// Clears O_NONBLOCK (set at open so a planted FIFO cannot hang a tool).
fn blocking(file: &std::fs::File) {
    use nix::fcntl::{FcntlArg, fcntl};
    if let Ok(flags) = fcntl(file, FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        let _ = fcntl(file, FcntlArg::F_SETFL(flags));
    }
}

/// Opens an existing regular file beneath the workspace.
fn open_regular(
    ws: &Workspace,
    rel: &Path,
    flags: OFlag,
    arg: &str,
) -> Result<(std::fs::File, FileStat), String> {
    let fd = ws.open(rel, flags | OFlag::O_NONBLOCK, Mode::empty(), arg)?;
    let stat = fstat(&fd).map_err(|e| refusal(arg, e))?;
    match kind(&stat) {
        "file" => {}
        "directory" => return Err(format!("`{arg}` is a directory (use fs_list)")),
        other => return Err(format!("`{arg}` is not a regular file (it is a {other})")),
    }
    let file = as_file(fd);
    blocking(&file);
    Ok((file, stat))
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ReadResult {
    pub path: String,
    /// The file's size in bytes.
    pub size: u64,
    /// Where this chunk starts.
    pub offset: u64,
    /// Bytes in this chunk.
    pub length: u64,
    /// Whether the chunk reaches the end of the file.
    pub eof: bool,
    /// True when the content is base64 (the bytes are not plain UTF-8 text).
    pub binary: bool,
    /// "utf-8" or "base64".
    pub encoding: &'static str,
    pub content: String,
}

/// Whether bytes read as JSON-friendly text: UTF-8 without control
/// characters other than tab, newlines, form feed and backspace.
fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok()
        && !bytes
            .iter()
            .any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x08)) || b == 0x7f)
}

pub fn read(
    ws: &Workspace,
    arg: &str,
    offset: u64,
    limit: Option<usize>,
) -> Result<ReadResult, String> {
    let rel = normalize(arg)?;
    let (mut file, stat) = open_regular(ws, &rel, OFlag::O_RDONLY, arg)?;
    let size = stat.st_size.max(0) as u64;
    let limit = limit.unwrap_or(READ_DEFAULT).clamp(1, READ_MAX);
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("`{arg}`: cannot seek to {offset}: {e}"))?;
    let mut bytes = Vec::with_capacity(limit.min(size.saturating_sub(offset) as usize));
    Read::by_ref(&mut file)
        .take(limit as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("`{arg}`: {e}"))?;
    let mut eof = offset + bytes.len() as u64 >= size;
    // A chunk cut inside a UTF-8 sequence: give the next call the whole character.
    if !eof
        && let Err(e) = std::str::from_utf8(&bytes)
        && e.error_len().is_none()
        && e.valid_up_to() > 0
    {
        bytes.truncate(e.valid_up_to());
        eof = false;
    }
    let text = is_text(&bytes);
    let content = if text {
        String::from_utf8(bytes.clone()).unwrap_or_default()
    } else {
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    };
    Ok(ReadResult {
        path: shown(&rel),
        size,
        offset,
        length: bytes.len() as u64,
        eof,
        binary: !text,
        encoding: if text { "utf-8" } else { "base64" },
        content,
    })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct WriteResult {
    pub path: String,
    pub bytes_written: u64,
    /// The file's size afterwards.
    pub size: u64,
}

/// Writes `content` (text, or base64 when `base64`) to `arg`.
pub fn write(
    ws: &Workspace,
    arg: &str,
    content: &str,
    base64: bool,
    append: bool,
    create_dirs: bool,
) -> Result<WriteResult, String> {
    let rel = normalize(arg)?;
    let data = if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| format!("content is not valid base64: {e}"))?
    } else {
        content.as_bytes().to_vec()
    };
    // Checks the parent (and makes it) with the same confinement.
    let _parent = ws.parent(&rel, create_dirs, arg)?;
    let mode = if append {
        OFlag::O_APPEND
    } else {
        OFlag::O_TRUNC
    };
    let fd = ws
        .open(
            &rel,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NONBLOCK | mode,
            Mode::from_bits_truncate(0o644),
            arg,
        )
        .map_err(|e| {
            if !create_dirs && e.ends_with("does not exist") {
                format!("{e} (its directory is missing; set create_dirs)")
            } else {
                e
            }
        })?;
    let stat = fstat(&fd).map_err(|e| refusal(arg, e))?;
    if kind(&stat) != "file" {
        return Err(format!(
            "`{arg}` is not a regular file (it is a {})",
            kind(&stat)
        ));
    }
    let mut file = as_file(fd);
    blocking(&file);
    file.write_all(&data).map_err(|e| format!("`{arg}`: {e}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(WriteResult {
        path: shown(&rel),
        bytes_written: data.len() as u64,
        size,
    })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct EditResult {
    pub path: String,
    pub replacements: usize,
    pub size: u64,
}

pub fn edit(
    ws: &Workspace,
    arg: &str,
    old: &str,
    new: &str,
    replace_all: bool,
) -> Result<EditResult, String> {
    if old.is_empty() {
        return Err("old_text is empty: give the exact text to replace".into());
    }
    let rel = normalize(arg)?;
    let (mut file, stat) = open_regular(ws, &rel, OFlag::O_RDONLY, arg)?;
    if stat.st_size as u64 > EDIT_MAX {
        return Err(format!(
            "`{arg}` is larger than {EDIT_MAX} bytes: too large to edit"
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|_| format!("`{arg}` is not UTF-8 text: fs_edit edits text files"))?;
    let count = text.matches(old).count();
    if count == 0 {
        return Err(format!(
            "old_text was not found in `{arg}` (it must match exactly, whitespace included)"
        ));
    }
    if count > 1 && !replace_all {
        return Err(format!(
            "old_text occurs {count} times in `{arg}`: include more surrounding text to make it unique, or set replace_all"
        ));
    }
    let edited = if replace_all {
        text.replace(old, new)
    } else {
        text.replacen(old, new, 1)
    };
    let fd = ws.open(
        &rel,
        OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NONBLOCK,
        Mode::empty(),
        arg,
    )?;
    let mut out = as_file(fd);
    blocking(&out);
    out.write_all(edited.as_bytes())
        .map_err(|e| format!("`{arg}`: {e}"))?;
    Ok(EditResult {
        path: shown(&rel),
        replacements: count,
        size: edited.len() as u64,
    })
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Entry {
    /// Relative to the workspace.
    pub path: String,
    /// file, directory, symlink, fifo, socket, char_device, block_device.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ListResult {
    pub path: String,
    pub entries: Vec<Entry>,
    /// Whether the listing stopped at max_entries.
    pub truncated: bool,
}

/// Reads the names in directory `dir` (sorted), without `.` and `..`.
fn names(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out: Vec<OsString> = d
        .iter()
        .filter_map(Result::ok)
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    out.sort();
    Ok(out)
}

/// Opens real subdirectory `name` of `dir` (a symlink is refused).
fn subdir(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Visits the tree under `dir` depth first; `visit` gets each entry's
/// relative path and stat, and returns false to stop.
fn walk(
    dir: &OwnedFd,
    base: &Path,
    recursive: bool,
    depth: usize,
    budget: &mut usize,
    visit: &mut dyn FnMut(&Path, &FileStat, &OwnedFd, &OsStr) -> bool,
) -> bool {
    let Ok(list) = names(dir) else {
        return true;
    };
    for name in list {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        let Ok(stat) = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let path = if base == Path::new(".") {
            PathBuf::from(&name)
        } else {
            base.join(&name)
        };
        if !visit(&path, &stat, dir, &name) {
            return false;
        }
        if recursive
            && depth < DEPTH_MAX
            && kind(&stat) == "directory"
            && let Ok(sub) = subdir(dir, &name)
            && !walk(&sub, &path, recursive, depth + 1, budget, visit)
        {
            return false;
        }
    }
    true
}

fn open_dir(ws: &Workspace, rel: &Path, arg: &str) -> Result<OwnedFd, String> {
    ws.open(
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
        arg,
    )
    .map_err(|e| {
        if e.contains("not a directory") {
            format!("`{arg}` is not a directory")
        } else {
            e
        }
    })
}

pub fn list(ws: &Workspace, arg: &str, recursive: bool, max: usize) -> Result<ListResult, String> {
    let rel = normalize(arg)?;
    let dir = open_dir(ws, &rel, arg)?;
    let mut entries = Vec::new();
    let mut truncated = false;
    let mut budget = WALK_MAX;
    walk(
        &dir,
        &rel,
        recursive,
        0,
        &mut budget,
        &mut |path, stat, _, _| {
            if entries.len() >= max {
                truncated = true;
                return false;
            }
            entries.push(Entry {
                path: shown(path),
                kind: kind(stat),
                size: stat.st_size.max(0) as u64,
            });
            true
        },
    );
    Ok(ListResult {
        path: shown(&rel),
        entries,
        truncated: truncated || budget == 0,
    })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StatResult {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    /// Permission bits in octal, e.g. "0644".
    pub mode: String,
    /// Last modification, ISO 8601 (UTC).
    pub mtime: String,
    /// For a symlink: what it points to (as written).
    pub link_target: Option<String>,
    /// For a symlink: the type of what it points to, when that is inside the workspace.
    pub target_type: Option<&'static str>,
}

pub fn stat(ws: &Workspace, arg: &str) -> Result<StatResult, String> {
    let rel = normalize(arg)?;
    let (stat, link_target) = if rel == Path::new(".") {
        (fstat(ws.fd()).map_err(|e| refusal(arg, e))?, None)
    } else {
        let (parent, name) = ws.parent(&rel, false, arg)?;
        let stat = fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| refusal(arg, e))?;
        let target = (kind(&stat) == "symlink")
            .then(|| nix::fcntl::readlinkat(&parent, name.as_os_str()).ok())
            .flatten()
            .map(|t| display(&t));
        (stat, target)
    };
    let target_type = link_target.as_ref().and_then(|_| {
        let fd = ws.open(&rel, OFlag::O_PATH, Mode::empty(), arg).ok()?;
        fstat(&fd).ok().map(|s| kind(&s))
    });
    Ok(StatResult {
        path: shown(&rel),
        kind: kind(&stat),
        size: stat.st_size.max(0) as u64,
        mode: format!("{:04o}", stat.st_mode & 0o7777),
        mtime: mtime(&stat),
        link_target,
        target_type,
    })
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DeleteResult {
    pub path: String,
    /// Entries removed (files, links and directories).
    pub removed: u64,
}

pub fn delete(ws: &Workspace, arg: &str, recursive: bool) -> Result<DeleteResult, String> {
    let rel = normalize(arg)?;
    if rel == Path::new(".") {
        return Err(format!(
            "`{arg}` is the workspace itself: delete what is in it instead"
        ));
    }
    let (parent, name) = ws.parent(&rel, false, arg)?;
    let stat = fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| refusal(arg, e))?;
    let mut removed = 0;
    if kind(&stat) == "directory" {
        if recursive {
            let dir = subdir(&parent, name.as_os_str()).map_err(|e| refusal(arg, e))?;
            empty(&dir, &mut removed).map_err(|e| refusal(arg, e))?;
        }
        unlinkat(&parent, name.as_os_str(), UnlinkatFlags::RemoveDir).map_err(|e| match e {
            Errno::ENOTEMPTY | Errno::EEXIST => {
                format!("`{arg}` is a directory that is not empty: set recursive to delete it with its contents")
            }
            e => refusal(arg, e),
        })?;
    } else {
        // A symlink is removed itself, never what it points to.
        unlinkat(&parent, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
            .map_err(|e| refusal(arg, e))?;
    }
    removed += 1;
    Ok(DeleteResult {
        path: shown(&rel),
        removed,
    })
}

/// Removes everything in `dir`, never following a symlink.
fn empty(dir: &OwnedFd, removed: &mut u64) -> Result<(), Errno> {
    for name in names(dir)? {
        let stat = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if kind(&stat) == "directory" {
            let sub = subdir(dir, &name)?;
            empty(&sub, removed)?;
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::RemoveDir)?;
        } else {
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
        }
        *removed += 1;
    }
    Ok(())
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Match {
    pub path: String,
    /// 1-based.
    pub line: u64,
    pub text: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SearchResult {
    /// Paths matching the glob (when no content pattern was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<Entry>>,
    /// Matching lines (when a content pattern was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<Match>>,
    pub files_searched: u64,
    /// Whether the search stopped at max_results (or at its walking limit).
    pub truncated: bool,
}

pub struct SearchQuery<'a> {
    pub path: &'a str,
    pub glob: &'a str,
    pub content: Option<&'a str>,
    pub fixed_strings: bool,
    pub case_insensitive: bool,
    pub max_results: usize,
}

pub fn search(ws: &Workspace, q: &SearchQuery<'_>) -> Result<SearchResult, String> {
    let rel = normalize(q.path)?;
    let glob = globset::GlobBuilder::new(q.glob)
        .case_insensitive(q.case_insensitive)
        .build()
        .map_err(|e| format!("pattern `{}` is not a valid glob: {e}", q.glob))?
        .compile_matcher();
    let regex = match q.content {
        None => None,
        Some("") => {
            return Err("content is empty: give text or a regular expression to look for".into());
        }
        Some(c) => {
            let source = if q.fixed_strings {
                regex::escape(c)
            } else {
                c.to_string()
            };
            Some(
                regex::RegexBuilder::new(&source)
                    .case_insensitive(q.case_insensitive)
                    .size_limit(10 << 20)
                    .build()
                    .map_err(|e| format!("content is not a valid regular expression (set fixed_strings for plain text): {e}"))?,
            )
        }
    };
    let dir = open_dir(ws, &rel, q.path)?;
    let mut paths = Vec::new();
    let mut matches = Vec::new();
    let mut files_searched = 0u64;
    let mut truncated = false;
    let mut budget = WALK_MAX;
    let base_len = if rel == Path::new(".") {
        0
    } else {
        rel.as_os_str().len() + 1
    };
    walk(
        &dir,
        &rel,
        true,
        0,
        &mut budget,
        &mut |path, stat, parent, name| {
            // The glob applies to the path below the searched directory.
            let below = OsStr::from_bytes(
                &path.as_os_str().as_bytes()[base_len.min(path.as_os_str().len())..],
            );
            if !glob.is_match(below) {
                return true;
            }
            let Some(regex) = &regex else {
                if paths.len() >= q.max_results {
                    truncated = true;
                    return false;
                }
                paths.push(Entry {
                    path: shown(path),
                    kind: kind(stat),
                    size: stat.st_size.max(0) as u64,
                });
                return true;
            };
            if kind(stat) != "file" || stat.st_size as u64 > SEARCH_FILE_MAX {
                return true;
            }
            let Ok(fd) = openat(
                parent,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) else {
                return true;
            };
            let mut bytes = Vec::new();
            if as_file(fd).read_to_end(&mut bytes).is_err()
                || bytes[..bytes.len().min(8192)].contains(&0)
            {
                return true; // unreadable or binary
            }
            files_searched += 1;
            let text = String::from_utf8_lossy(&bytes);
            for (i, line) in text.lines().enumerate() {
                if regex.is_match(line) {
                    if matches.len() >= q.max_results {
                        truncated = true;
                        return false;
                    }
                    let mut shown_line: String = line.chars().take(LINE_MAX).collect();
                    if shown_line.len() < line.len() {
                        shown_line.push_str(" [...]");
                    }
                    matches.push(Match {
                        path: shown(path),
                        line: i as u64 + 1,
                        text: shown_line,
                    });
                }
            }
            true
        },
    );
    let _ = dir.as_fd();
    Ok(SearchResult {
        paths: regex.is_none().then_some(paths),
        matches: regex.is_some().then_some(matches),
        files_searched,
        truncated: truncated || budget == 0,
    })
}
