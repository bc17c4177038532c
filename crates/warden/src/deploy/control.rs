//! The supervisor's control socket: one JSON request line, one JSON response line per
//! connection. The socket lives in a 0700 directory (root only).

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Requests larger than this are refused (a policy is a few KiB).
pub const MAX_REQUEST: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// New egress, inference and orders policies; the sandbox keeps running.
    /// Boxed: the policies dwarf the other variants.
    Reload {
        policies: Box<super::supervisor::Policies>,
    },
    /// Stop the sandbox (SIGTERM, grace period, SIGKILL) and exit.
    Stop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Status(Status),
    Ok,
    Error { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    #[default]
    Starting,
    Running,
    /// Waiting out the backoff before a restart.
    Restarting,
    /// The command ended and the restart policy does not restart it.
    Exited,
    Stopping,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Status {
    pub name: String,
    pub phase: Phase,
    pub supervisor_pid: u32,
    /// Host pid of the container's init while it runs.
    pub pid: Option<i32>,
    pub container_id: Option<String>,
    /// Seconds since the epoch when the current (or last) run started.
    pub started_at: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<i32>,
    pub image_digest: String,
    pub memory_bytes: Option<u64>,
    /// Why the last run could not start, if it could not.
    pub error: Option<String>,
}

/// Send one request and read the response.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the supervisor at `{}`: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| format!("cannot talk to the supervisor: {e}"))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(MAX_REQUEST)
        .read_line(&mut reply)
        .map_err(|e| format!("no answer from the supervisor: {e}"))?;
    serde_json::from_str(&reply).map_err(|e| format!("bad answer from the supervisor: {e}"))
}

pub fn status(socket: &Path) -> Result<Status, String> {
    match call(socket, &Request::Status, Duration::from_secs(2))? {
        Response::Status(s) => Ok(s),
        Response::Error { message } => Err(message),
        Response::Ok => Err("unexpected answer from the supervisor".into()),
    }
}

use std::io::Read;

/// Read one request from a connection (bounded), for the server side.
pub fn read_request(stream: &UnixStream) -> Result<Request, String> {
    let mut line = String::new();
    BufReader::new(stream)
        .take(MAX_REQUEST)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("bad request: {e}"))
}

pub fn write_response(mut stream: &UnixStream, resp: &Response) {
    if let Ok(mut line) = serde_json::to_vec(resp) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}
