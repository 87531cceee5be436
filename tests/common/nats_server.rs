//! A `nats-server` per test: JetStream on a free loopback port with its
//! store in a directory the caller owns, killed when dropped. Tests call
//! [`have_nats_server`] first: without the binary they skip with a loud
//! line on stderr, except under CI (`CI` set), where that is a failure.
//! Shared by `tests/nats_cluster.rs` and the backend-parameterized suites.

// Compiled into each of them; only the cluster test starts a cluster.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server process, killed on drop.
pub struct Server {
    pub name: String,
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts a server on a free port and waits until it listens. A port
    /// found free can be taken by another process before the server binds
    /// it (tests run in parallel): then the server exits, and this tries
    /// again on another port.
    pub fn start(name: &str, store: &Path, cluster: Option<(u16, &[u16])>) -> Server {
        for _ in 0..5 {
            let mut server = Server::spawn(name, store, cluster);
            if server.wait_listening() {
                return server;
            }
            server.kill();
        }
        panic!("nats-server {name} did not start on any of 5 ports");
    }

    fn spawn(name: &str, store: &Path, cluster: Option<(u16, &[u16])>) -> Server {
        let port = free_port();
        let mut command = Command::new("nats-server");
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-n", name])
            .arg("-sd")
            .arg(store);
        if let Some((cluster_port, peers)) = cluster {
            let routes: Vec<String> = peers
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            command.args([
                "--cluster_name",
                "logbus",
                "--cluster",
                &format!("nats-route://127.0.0.1:{cluster_port}"),
                "--routes",
                &routes.join(","),
            ]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        Server {
            name: name.to_owned(),
            port,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether the server listens on its port (within 10 s) and is still
    /// running then: one that exited (its port was taken) does not.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().map_or(true, |status| status.is_some()),
                None => true,
            };
            if exited {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // Someone listens: this server, unless it is about to exit
                // because another process holds the port.
                std::thread::sleep(Duration::from_millis(50));
                return self
                    .child
                    .as_mut()
                    .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not listen",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback cluster of three servers `n0`, `n1`, `n2`, each with its own
/// store under `dir`, each routing to the other two.
pub fn cluster(dir: &Path) -> Vec<Server> {
    let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    (0..3)
        .map(|i| {
            let peers: Vec<u16> = route_ports
                .iter()
                .copied()
                .filter(|&p| p != route_ports[i])
                .collect();
            let store = dir.join(format!("n{i}"));
            Server::start(&format!("n{i}"), &store, Some((route_ports[i], &peers)))
        })
        .collect()
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// False (with a loud note) when nats-server is missing outside CI.
pub fn have_nats_server() -> bool {
    let found = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server is not on PATH under CI: .ci/run must install it"
        );
        // Straight to stderr: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "=== NATS test SKIPPED: nats-server not on PATH (apt-get install -y nats-server) ==="
        );
    }
    found
}
