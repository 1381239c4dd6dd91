//! A one-request HTTP server on 127.0.0.1 that sends zeros, for the download size limits. Shared
//! by the data crate's download tests and the CLI's (`#[path]`), so both test one server.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

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
