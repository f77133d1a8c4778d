//! Helpers of the `gemma serve` tests: start the server on a free 127.0.0.1 port (port 0, the address read from its
//! first stderr line), wait for `/health`, and a minimal HTTP/1.1 client over `TcpStream` (the tests need nothing
//! more: one request per connection, `Connection: close`, chunked bodies decoded).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    pub addr: String,
    /// Everything the server wrote on stderr so far.
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// `gemma serve -m dir --port 0 --threads 1 ARGS`, ready (health 200) or panics after 120 s.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gemma"))
            .args([
                "serve",
                "-m",
                dir.to_str().unwrap(),
                "--port",
                "0",
                "--threads",
                "1",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gemma serve");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        let log = Arc::new(Mutex::new(first));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let server = Server { child, addr, log };
        let start = Instant::now();
        loop {
            if let Ok(r) = server.try_request("GET", "/health", None, &[]) {
                if r.status == 200 {
                    break;
                }
                assert_eq!(r.status, 503, "{}", r.body);
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "server not ready: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        let mut s = TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(300)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        if let Some(b) = body {
            // A server that refuses a large body may close before reading it all: read its answer anyway.
            let _ = s.write_all(b);
        }
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        Ok(Response::parse(&raw))
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let bytes = body.map(|b| b.to_string().into_bytes());
        self.try_request(method, path, bytes.as_deref(), &[])
            .unwrap()
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.request("POST", path, Some(body))
    }

    /// The reply text of a non-streamed chat completion (asserting 200).
    pub fn chat_text(&self, body: &Value) -> String {
        let r = self.post("/v1/chat/completions", body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// A streamed chat completion: the concatenated `delta.content`, and the events' data lines.
    pub fn chat_stream(&self, body: &Value) -> (String, Vec<String>) {
        let mut body = body.clone();
        body["stream"] = Value::Bool(true);
        let r = self.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let data = r.sse_data();
        let text = data
            .iter()
            .filter(|d| d.as_str() != "[DONE]")
            .filter_map(|d| {
                let v: Value = serde_json::from_str(d).unwrap();
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        (text, data)
    }

    /// The reply texts of `bodies` sent all at once, one thread each: request `i` streamed when `i + round` is
    /// even, not streamed otherwise.
    pub fn chat_together(&self, bodies: &[Value], round: usize) -> Vec<String> {
        std::thread::scope(|s| {
            let handles: Vec<_> = bodies
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    s.spawn(move || match (i + round) % 2 {
                        0 => self.chat_stream(b).0,
                        _ => self.chat_text(b),
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// SIGTERM, then the exit status within 30 s.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn unsafe_kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        Response {
            status,
            headers: head.to_string(),
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `data:` payloads of a Server-Sent Events body.
    pub fn sse_data(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
            .map(String::from)
            .collect()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Standard base64 with padding, for `data:` URIs.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
