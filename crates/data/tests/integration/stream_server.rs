//! HTTP servers on 127.0.0.1 for the download tests: one that serves given files, one that sends
//! zeros for the size limits. Shared by the data crate's download tests and the CLI's (`#[path]`),
//! so both test one server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Serves `files` (path, bytes) on 127.0.0.1 for at most `requests` requests or 30 seconds.
pub fn serve_files(files: Vec<(String, Vec<u8>)>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut served = 0;
        while served < requests && Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            served += 1;
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let Some(req) = read_request_head(&mut s) else { continue };
            let line = String::from_utf8_lossy(&req).lines().next().unwrap_or_default().to_string();
            let path = line.split(' ').nth(1).unwrap_or("/").to_string();
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let head =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    format!("http://{addr}")
}

/// How a [`serve_stream`] response sends its body.
#[derive(Clone, Copy)]
pub enum Body {
    /// `bytes` zeros with a `Content-Length` saying so.
    Announced(u64),
    /// `bytes` zeros without a `Content-Length`, ended by closing the connection.
    Unannounced(u64),
    /// Zeros without end, until the client hangs up.
    Endless,
}

/// Serves one request on 127.0.0.1 with a body of zeros as `body` says, in 64 KiB writes, and
/// stops writing as soon as the client has gone.
pub fn serve_stream(body: Body) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else { return };
        if read_request_head(&mut s).is_none() {
            return;
        }
        let (head, total) = match body {
            Body::Announced(n) => (format!("Content-Length: {n}\r\n"), Some(n)),
            Body::Unannounced(n) => (String::new(), Some(n)),
            Body::Endless => (String::new(), None),
        };
        if s.write_all(format!("HTTP/1.1 200 OK\r\n{head}Connection: close\r\n\r\n").as_bytes()).is_err() {
            return;
        }
        let chunk = vec![0u8; 64 << 10];
        let mut sent = 0u64;
        while total.is_none_or(|t| sent < t) {
            let n = total.map_or(chunk.len() as u64, |t| (t - sent).min(chunk.len() as u64)) as usize;
            if s.write_all(&chunk[..n]).is_err() {
                return;
            }
            sent += n as u64;
        }
    });
    format!("http://{addr}")
}

/// Reads a request up to the blank line that ends its head; `None` when the client hangs up or
/// the read fails first.
pub fn read_request_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    Some(req)
}
