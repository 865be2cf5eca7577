//! Small echo servers and clients that say which endpoint answered.
//!
//! TCP: on accept the server writes its one-byte id, then echoes every byte
//! until the client closes. UDP: every datagram is answered with the id byte
//! followed by the datagram. A client therefore learns which endpoint served
//! it and can check the data came back unchanged.

use std::{
    io::{Read, Write},
    net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::Netns;

/// Echo servers (TCP and UDP on the same port) running in a namespace.
/// Stopped on drop.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// TCP connections accepted so far.
    pub accepted: Arc<AtomicU64>,
}

impl EchoServer {
    /// Starts TCP and UDP echo servers on `addr` inside `ns`, answering with `id`.
    pub fn start(ns: &Netns, addr: SocketAddrV4, id: u8) -> Result<Self> {
        let (tcp, udp) = ns.enter(move || -> Result<(TcpListener, UdpSocket)> {
            let tcp = TcpListener::bind(addr).with_context(|| format!("bind tcp {addr}"))?;
            let udp = UdpSocket::bind(addr).with_context(|| format!("bind udp {addr}"))?;
            Ok((tcp, udp))
        })??;
        tcp.set_nonblocking(true)?;
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        {
            let stop = stop.clone();
            let accepted = accepted.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((conn, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            std::thread::spawn(move || serve_tcp(conn, id));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = udp.recv_from(&mut buf[1..]) {
                        buf[0] = id;
                        let _ = udp.send_to(&buf[..=n], peer);
                    }
                }
            }));
        }
        Ok(Self {
            stop,
            threads,
            accepted,
        })
    }
}

fn serve_tcp(mut conn: TcpStream, id: u8) {
    let _ = conn.set_nonblocking(false);
    if conn.write_all(&[id]).is_err() {
        return;
    }
    let mut buf = vec![0u8; 65536];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Deterministic test payload of `len` bytes, different per `seed`.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// One TCP exchange: connect, read the id, send `data`, read it back, close.
/// Must run inside the client namespace. Returns the endpoint id.
pub fn tcp_exchange(server: SocketAddr, data: &[u8], timeout: Duration) -> Result<u8> {
    let mut s = TcpStream::connect_timeout(&server, timeout)
        .with_context(|| format!("connect {server}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut id = [0u8; 1];
    s.read_exact(&mut id).context("read endpoint id")?;
    let writer = {
        let mut w = s.try_clone()?;
        let data = data.to_vec();
        std::thread::spawn(move || w.write_all(&data))
    };
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).context("read echo")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))?
        .context("write data")?;
    ensure!(back == data, "echoed data differs from what was sent");
    Ok(id[0])
}

/// One UDP exchange from `sock`: send `data`, expect id + `data` back.
/// Retries a lost datagram a few times (UDP may drop the first packet while a
/// neighbour resolves). Returns the endpoint id.
pub fn udp_exchange(sock: &UdpSocket, server: SocketAddr, data: &[u8]) -> Result<u8> {
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut buf = vec![0u8; data.len() + 16];
    for _attempt in 0..5 {
        sock.send_to(data, server)?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                ensure!(
                    n == data.len() + 1,
                    "UDP reply has {n} bytes, want {}",
                    data.len() + 1
                );
                ensure!(
                    &buf[1..n] == data,
                    "UDP reply data differs from what was sent"
                );
                return Ok(buf[0]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    bail!("no UDP reply from {server} after 5 tries")
}
