//! The OpAMP test server of `tests/python/opamp/` (README there): a real OpAMP server over
//! WebSocket and HTTP, driven and inspected through its JSON control API.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::collector::Group;

/// `tests/python/opamp`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/opamp")
}

/// Whether the server's Python packages are there (in CI a missing one fails the test).
pub fn available(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import grpc_tools, websockets, cryptography"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let install = "pip install -r tests/python/opamp/requirements.txt";
        if std::env::var_os("CI").is_some() {
            panic!("{test}: the OpAMP test server's packages are required in CI ({install})");
        }
        eprintln!("SKIPPED {test}: the OpAMP test server's packages are missing ({install})");
    }
    ok
}

/// A running `server.py`.
pub struct OpampServer {
    proc: Group,
    pub ws: u16,
    pub http: u16,
    pub control: SocketAddr,
    log: PathBuf,
}

impl OpampServer {
    /// On free ports.
    pub fn start(dir: &Path) -> Self {
        Self::start_on(dir, 0, 0)
    }

    /// On these ports (0: a free one), so a restarted server is where the agent expects it.
    pub fn start_on(dir: &Path, ws: u16, http: u16) -> Self {
        Self::start_with(dir, ws, http, &[])
    }

    /// With more `server.py` arguments (`--tls-cert`, `--tls-key`, `--client-ca`).
    pub fn start_with(dir: &Path, ws: u16, http: u16, args: &[&str]) -> Self {
        let log = dir.join(format!("opamp-server-{}.log", Instant::now().elapsed().as_nanos() ^ ws as u128));
        let log = if log.exists() { dir.join("opamp-server-2.log") } else { log };
        let mut cmd = Command::new("python3");
        cmd.arg(self::dir().join("server.py"))
            .args(["--ws-port", &ws.to_string(), "--http-port", &http.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut proc = Group::spawn("the OpAMP test server", &mut cmd);
        let stdout = proc.child_stdout().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let ports: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!("server.py printed {line:?}; its log:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        let port = |k: &str| ports[k].as_u64().unwrap() as u16;
        Self {
            proc,
            ws: port("ws"),
            http: port("http"),
            control: SocketAddr::from(([127, 0, 0, 1], port("control"))),
            log,
        }
    }

    pub fn wss_url(&self) -> String {
        format!("wss://127.0.0.1:{}/v1/opamp", self.ws)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/opamp", self.ws)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/opamp", self.http)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut c = std::net::TcpStream::connect_timeout(&self.control, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("the control API: {e}; server log:\n{}", self.log()));
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "{method} {path}: {head}\n{body}"
        );
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    pub fn get(&self, path: &str) -> Value {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        self.call("POST", path, Some(&body))
    }

    /// Every AgentToServer received, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.get("/messages").as_array().cloned().unwrap_or_default()
    }

    /// Offers `files` (name → text; `.sig` names take base64) as the remote config; its hash.
    pub fn offer(&self, files: &[(&str, &str)]) -> String {
        let files: serde_json::Map<String, Value> =
            files.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
        let r = self.post("/remote_config", serde_json::json!({ "files": files, "content_type": "text/yaml" }));
        r["hash"].as_str().unwrap().to_string()
    }

    /// Waits until `f` finds what it wants in `/state`.
    pub fn wait_state<T>(&self, what: &str, timeout: Duration, f: impl Fn(&Value) -> Option<T>) -> T {
        let t = Instant::now();
        loop {
            let s = self.get("/state");
            if let Some(v) = f(&s) {
                return v;
            }
            assert!(t.elapsed() < timeout, "timed out waiting for {what}; state:\n{s:#}\nserver log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the remote config status of `hash` to be `status` (`APPLIED`, `FAILED`);
    /// returns its error message.
    pub fn wait_status(&self, hash: &str, status: &str, timeout: Duration) -> String {
        let want = hash_b64(hash);
        self.wait_state(&format!("remote config {hash} {status}"), timeout, |s| {
            let r = &s["remote_config_status"];
            (r["last_remote_config_hash"].as_str() == Some(want.as_str())
                && r["status"].as_str().is_some_and(|s| s.ends_with(status)))
            .then(|| r["error_message"].as_str().unwrap_or_default().to_string())
        })
    }

    pub fn stop(mut self) {
        self.proc.stop(Duration::from_secs(5));
    }
}

/// A hex hash as the control API's JSON writes bytes (base64).
pub fn hash_b64(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect();
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `pki.py DIR`: a CA, a server certificate for 127.0.0.1, client certificates `client1`,
/// `client2` and `bad` (another CA's); paths by key (README there).
pub fn pki(dir: &Path) -> Value {
    let out = Command::new("python3").arg(self::dir().join("pki.py")).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `sign.py keygen DIR`: (public key PEM path, private key path).
pub fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new("python3").arg(self::dir().join("sign.py")).arg("keygen").arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (dir.join("opamp-ed25519.pub"), dir.join("opamp-ed25519.key"))
}

/// `sign.py sign KEY FILE`: the base64 signature over `text`.
pub fn sign(key: &Path, text: &str, scratch: &Path) -> String {
    let file = scratch.join("to-sign.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new("python3").arg(dir().join("sign.py")).arg("sign").arg(key).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
