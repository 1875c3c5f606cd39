//! The test's hostile HTTP server: it serves one file, answering range
//! requests wrongly on purpose in a chosen way. nginx serves the real
//! tests; this server exists only for the misbehaviours no real server can
//! be configured into (a body cut short on every answer, one longer than
//! announced, a Content-Range for other bytes, headers and then silence).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers correctly (a control).
    None,
    /// Sends every body only up to this many bytes, then closes.
    CutAfter(u64),
    /// Sends a chunked body longer than the range asked for.
    TooLong,
    /// Announces and sends the bytes one past the range asked for.
    WrongRange,
    /// Sends the headers of a correct answer, then nothing.
    Stall,
}

pub struct HostileServer {
    pub port: u16,
    pub requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl HostileServer {
    pub fn start(file: PathBuf, mode: Misbehaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            let data = Arc::new(std::fs::read(&file).unwrap());
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (data, r, s) = (data.clone(), r.clone(), s.clone());
                std::thread::spawn(move || {
                    r.fetch_add(1, Ordering::Relaxed);
                    let _ = serve(conn, &data, mode, &s);
                });
            }
        });
        Self {
            port,
            requests,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/bundle.raucb", self.port)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    conn: TcpStream,
    data: &[u8],
    mode: Misbehaviour,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (a, b) = v.split_once('-').unwrap();
            range = Some((a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
        }
    }
    let mut w = conn;
    let size = data.len() as u64;
    let (a, b) = range.unwrap_or((0, size - 1));
    let b = b.min(size - 1);
    let (a, b) = if mode == Misbehaviour::WrongRange && b + 1 < size {
        (a + 1, b + 1)
    } else {
        (a, b)
    };
    let body = &data[a as usize..=b as usize];
    let etag = "\"hostile-1\"";
    match mode {
        Misbehaviour::TooLong => {
            write!(
                w,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{size}\r\n\
                 ETag: {etag}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )?;
            let mut longer = body.to_vec();
            longer.extend_from_slice(b"and some more bytes than asked for");
            write!(w, "{:x}\r\n", longer.len())?;
            w.write_all(&longer)?;
            w.write_all(b"\r\n0\r\n\r\n")?;
        }
        _ => {
            write!(
                w,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{size}\r\n\
                 ETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            match mode {
                Misbehaviour::Stall => {
                    w.flush()?;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
                Misbehaviour::CutAfter(n) => {
                    w.write_all(&body[..(n as usize).min(body.len())])?;
                }
                _ => w.write_all(body)?,
            }
        }
    }
    w.flush()
}
