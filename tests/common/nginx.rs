//! Debian's real nginx, started by a test on a port of its own: a plain HTTP
//! server, and HTTPS servers with certificates of a test CA (one requiring a
//! client certificate). The access log records every request's range, status
//! and bytes sent, so tests can count what went over the wire.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One line of the access log.
#[derive(Debug, Clone)]
pub struct Request {
    pub request: String,
    pub status: u16,
    pub bytes_sent: u64,
    pub range: String,
}

pub struct Nginx {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub host: String,
    pub port: u16,
    /// HTTPS servers by the name of their certificate (see [`TestPki`]),
    /// and `mtls`, which requires a client certificate from the test CA.
    pub tls_ports: std::collections::BTreeMap<String, u16>,
    /// `ip netns exec <name>` prefix, when nginx runs in a network namespace.
    netns: Option<String>,
    conf: PathBuf,
    child: Option<Child>,
}

/// What a server serves besides plain files under `/`.
#[derive(Default, Clone)]
pub struct Options {
    /// Address to listen on (default 127.0.0.1).
    pub host: Option<String>,
    /// Run inside this network namespace.
    pub netns: Option<String>,
    /// HTTPS servers: one per certificate name of this PKI, and `mtls`.
    pub tls: Option<PathBuf>,
    /// More `location` blocks for the plain server.
    pub locations: String,
    /// Serve this directory instead of a fresh `www` of the server's own.
    pub root: Option<PathBuf>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Nginx {
    pub fn start(options: Options) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("didymos-nginx-")
            .tempdir()
            .unwrap()
            .keep();
        let root = options.root.clone().unwrap_or_else(|| dir.join("www"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let host = options.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let port = free_port();
        let d = dir.display();
        let r = root.display();
        let mut servers = format!(
            "server {{ listen {host}:{port}; root {r};\n{}\n}}\n",
            options.locations
        );
        let mut tls_ports = std::collections::BTreeMap::new();
        if let Some(pki) = &options.tls {
            let p = pki.display();
            for name in ["server", "expired", "wrong-name", "other-server", "mtls"] {
                let tls_port = free_port();
                let cert = if name == "mtls" { "server" } else { name };
                let client = if name == "mtls" {
                    format!("ssl_verify_client on; ssl_client_certificate {p}/ca.pem;")
                } else {
                    String::new()
                };
                servers.push_str(&format!(
                    "server {{ listen {host}:{tls_port} ssl; root {r};\n\
                     ssl_certificate {p}/{cert}.pem; ssl_certificate_key {p}/{cert}.key; {client} }}\n"
                ));
                tls_ports.insert(name.to_owned(), tls_port);
            }
        }
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nuser root;\nworker_processes 2;\npid {d}/nginx.pid;\n\
                 error_log {d}/error.log;\nevents {{ worker_connections 256; }}\n\
                 http {{\n  log_format d '$request|$status|$bytes_sent|$http_range';\n\
                 access_log {d}/access.log d;\n  keepalive_requests 10000;\n\
                 client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
                 fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
                 {servers}}}\n"
            ),
        )
        .unwrap();
        let mut n = Nginx {
            dir,
            root,
            host,
            port,
            tls_ports,
            netns: options.netns,
            conf,
            child: None,
        };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nginx"]);
                c
            }
            None => Command::new("nginx"),
        };
        cmd.arg("-c")
            .arg(&self.conf)
            .arg("-e")
            .arg(self.dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(
            cmd.spawn()
                .expect("nginx (Debian package nginx, tests/deps.sh)"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the server accepts connections (a namespace's address is
    /// reached from the host through its veth).
    fn answers(&self) -> bool {
        let addr = format!("{}:{}", self.host, self.port);
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200))
            .is_ok()
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}:{}/{name}", self.host, self.port)
    }

    /// `https://<host>:<port of the server with certificate `cert`>/<name>`.
    pub fn tls_url(&self, cert: &str, host: &str, name: &str) -> String {
        format!("https://{host}:{}/{name}", self.tls_ports[cert])
    }

    /// Puts `file` under `name` in the server's root (atomically: a rename).
    pub fn publish(&self, file: &Path, name: &str) {
        let dest = self.root.join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let tmp = dest.with_file_name(format!(
            ".{}.tmp",
            dest.file_name().unwrap().to_string_lossy()
        ));
        std::fs::copy(file, &tmp).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
    }

    /// Debian's nginx serving `root` on 127.0.0.1.
    pub fn serving(root: &Path) -> Self {
        Self::start(Options {
            root: Some(root.to_owned()),
            ..Options::default()
        })
    }

    fn master(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The master's workers.
    fn workers(&self) -> Vec<i32> {
        let Some(master) = self.master() else {
            return Vec::new();
        };
        let out = Command::new("pgrep")
            .args(["-P", &master.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// SIGKILL to the master and every worker: the server is gone, mid-answer.
    ///
    /// The master goes first and is reaped before its workers are killed: a
    /// master that outlives a worker starts a new one, which (orphaned by
    /// the master's death a moment later) would go on answering.
    pub fn kill(&mut self) {
        let workers = self.workers();
        if let Some(master) = self.master() {
            let _ = Command::new("kill")
                .args(["-KILL", &master.to_string()])
                .status();
            wait_gone(&[master]);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in &workers {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // A signal is delivered asynchronously: until every worker has
        // exited (and closed its sockets), one may still answer a request.
        wait_gone(&workers);
        assert!(
            !self.answers(),
            "nginx was killed but {}:{} still answers",
            self.host,
            self.port
        );
        let _ = std::fs::remove_file(self.dir.join("nginx.pid"));
    }

    /// SIGKILL to the workers only: the connections they serve break; the
    /// master starts new workers.
    pub fn kill_workers(&self) {
        for pid in self.workers() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Every request logged so far.
    pub fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut f = l.split('|');
                Some(Request {
                    request: f.next()?.to_owned(),
                    status: f.next()?.parse().ok()?,
                    bytes_sent: f.next()?.parse().ok()?,
                    range: f.next().unwrap_or("").to_owned(),
                })
            })
            .collect()
    }

    /// Bytes sent (headers included), over every request so far.
    pub fn bytes_sent(&self) -> u64 {
        self.requests().iter().map(|r| r.bytes_sent).sum()
    }

    /// Forgets the requests logged so far.
    pub fn clear_log(&self) {
        std::fs::write(self.dir.join("access.log"), "").unwrap();
    }
}

/// Waits (up to 10 s) until none of `pids` runs: each has exited, or is a
/// zombie its parent has yet to reap (its sockets are closed by then).
fn wait_gone(pids: &[i32]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let running = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    };
    while pids.iter().any(running) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A test CA and certificates for the HTTPS servers: the server's (for
/// `localhost` and 127.0.0.1), an expired one, one for another name, one
/// from a second CA nobody trusts, and a client's. PEM files in `dir`.
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path) -> Self {
        use didymos::bundle::devpki::{CertSpec, Issued, LeafUsage, issue};
        std::fs::create_dir_all(dir).unwrap();
        let save = |name: &str, i: &Issued| {
            std::fs::write(dir.join(format!("{name}.pem")), i.cert.to_pem().unwrap()).unwrap();
            std::fs::write(
                dir.join(format!("{name}.key")),
                i.key.private_key_to_pem_pkcs8().unwrap(),
            )
            .unwrap();
        };
        // subjectAltName: DNS:localhost, IP:127.0.0.1 (GeneralNames, DER).
        let mut san = vec![0x30, 0x11, 0x82, 0x09];
        san.extend_from_slice(b"localhost");
        san.extend_from_slice(&[0x87, 0x04, 127, 0, 0, 1]);
        let mut other_name = vec![0x30, 0x0f, 0x82, 0x0d];
        other_name.extend_from_slice(b"other.example");
        // extendedKeyUsage: clientAuth.
        let client_auth = vec![
            0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02,
        ];
        let ca = issue(&CertSpec::ca("didymos test CA", 1), None).unwrap();
        let other_ca = issue(&CertSpec::ca("didymos untrusted CA", 2), None).unwrap();
        let server = |cn: &str, serial, san: &[u8], from: i64, to: i64, by: &Issued| {
            let mut spec = CertSpec::signer(cn, serial);
            spec.usage = LeafUsage::ServerAuth;
            spec.not_before = from;
            spec.not_after = to;
            spec.extensions = vec![("2.5.29.17".into(), san.to_vec())];
            issue(&spec, Some(by)).unwrap()
        };
        save("ca", &ca);
        save("other-ca", &other_ca);
        save("server", &server("localhost", 10, &san, -3600, 86400, &ca));
        save("expired", &server("localhost", 11, &san, -7200, -3600, &ca));
        save(
            "wrong-name",
            &server("other.example", 12, &other_name, -3600, 86400, &ca),
        );
        save(
            "other-server",
            &server("localhost", 13, &san, -3600, 86400, &other_ca),
        );
        let mut client = CertSpec::signer("didymos test device", 14);
        client.usage = LeafUsage::None;
        client.extensions = vec![("2.5.29.37".into(), client_auth)];
        save("client", &issue(&client, Some(&ca)).unwrap());
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
