//! A small plain-HTTP proxy between cwbackup and SeaweedFS that injects what a busy server and
//! a bad network do: `503 SlowDown` answers, uploads cut off half-way, and (as a server that
//! ignores them would) conditional headers dropped. Every request is passed on with
//! `Connection: close`, so each connection carries one request and its answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What to do to the next requests; counters count down as faults are injected.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Answer this many requests with `503 SlowDown`.
    pub slow_down: u32,
    /// Answer this many requests for a set's files (under `.staging/`) with `503 SlowDown`.
    pub slow_down_staged: u32,
    /// Cut this many uploads of a set's files (PUTs with a body under `.staging/`) after
    /// half their body.
    pub cut_uploads: u32,
    /// Drop `If-None-Match` and `If-Match`.
    pub strip_conditions: bool,
}

pub struct Proxy {
    pub port: u16,
    pub faults: Arc<Mutex<Faults>>,
}

impl Proxy {
    /// A proxy on a free 127.0.0.1 port in front of `upstream` (a 127.0.0.1 port).
    pub fn start(upstream: u16, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Mutex::new(faults));
        let shared = faults.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let faults = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &faults);
                });
            }
        });
        Proxy { port, faults }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn faults(&self) -> Faults {
        self.faults.lock().unwrap().clone()
    }
}

/// One request: read its head and body, then answer it, cut it, or pass it on.
fn serve(client: TcpStream, upstream: u16, faults: &Mutex<Faults>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        head.push(line);
    }
    let method = head[0].split(' ').next().unwrap_or_default().to_string();
    let header = |name: &str| {
        head.iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let (slow, cut, strip) = {
        let mut f = faults.lock().unwrap();
        let staged = head[0].contains("/.staging/");
        let slow = if f.slow_down > 0 {
            f.slow_down -= 1;
            true
        } else if staged && f.slow_down_staged > 0 {
            f.slow_down_staged -= 1;
            true
        } else {
            false
        };
        let cut = !slow && method == "PUT" && staged && length > 0 && f.cut_uploads > 0;
        if cut {
            f.cut_uploads -= 1;
        }
        (slow, cut, f.strip_conditions)
    };
    let mut client = client;
    if slow {
        reader.read_exact(&mut body)?;
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        write!(
            client,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        )?;
        return client.shutdown(Shutdown::Both);
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut out = String::new();
    for line in &head {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let dropped =
            name == "connection" || (strip && (name == "if-none-match" || name == "if-match"));
        if !dropped {
            out.push_str(line);
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    if cut {
        let mut half = vec![0; length / 2];
        reader.read_exact(&mut half)?;
        up.write_all(&half)?;
        let _ = up.shutdown(Shutdown::Both);
        return client.shutdown(Shutdown::Both);
    }
    reader.read_exact(&mut body)?;
    up.write_all(&body)?;
    std::io::copy(&mut up, &mut client)?;
    client.shutdown(Shutdown::Both)
}
