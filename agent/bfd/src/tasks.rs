//! Socket I/O only: binding the RFC 5881 sockets, the per-socket receive
//! task, and the non-blocking send. No protocol decisions are made here
//! beyond decoding the datagram.
//!
//! RFC 5881 section 4: "BFD Control packets MUST be transmitted in UDP
//! packets with destination port 3784, within an IPv4 or IPv6 packet. The
//! source port MUST be in the range 49152 through 65535."
//! Section 5: "If BFD authentication is not in use on a session, all BFD
//! Control packets for the session MUST be sent with a Time to Live (TTL)
//! or Hop Limit value of 255. All received BFD Control packets that are
//! demultiplexed to the session MUST be discarded if the received TTL or
//! Hop Limit is not equal to 255." We send 255 always and check it always
//! (authenticated sessions may accept less; we do not need to).

use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::packet::{DecodeError, Packet};

/// Source port range of RFC 5881 section 4.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// One received datagram, decoded by the receive task.
#[derive(Debug, Clone)]
pub struct RxDatagram {
    pub src: SocketAddr,
    /// TTL / hop limit from the control message, if the kernel gave one.
    pub ttl: Option<u8>,
    pub bytes: Vec<u8>,
    pub decoded: Result<Packet, DecodeError>,
}

/// Binds a receive socket on `addr` (port 3784 in production) that reports
/// the TTL / hop limit of every datagram.
pub fn bind_rx(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv4() {
        setsockopt(&sock, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
    } else {
        sock.set_only_v6(true)?;
        setsockopt(&sock, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Binds a transmit socket on `local` with a source port from 49152-65535
/// and TTL / hop limit 255.
pub fn bind_tx(local: IpAddr) -> io::Result<std::net::UdpSocket> {
    let domain = if local.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if local.is_ipv4() {
        sock.set_ttl_v4(255)?;
    } else {
        sock.set_unicast_hops_v6(255)?;
    }
    sock.set_nonblocking(true)?;
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let start: u32 = rand::random_range(0..span);
    let mut last_err = None;
    for i in 0..span.min(512) {
        let port = *SOURCE_PORTS.start() + ((start + i) % span) as u16;
        match sock.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => return Ok(sock.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no free source port")))
}

/// Sends without blocking; a full socket buffer is reported as an error
/// and the packet is dropped (the next periodic packet follows shortly).
pub fn send(sock: &std::net::UdpSocket, bytes: &[u8], dst: SocketAddr) -> io::Result<()> {
    sock.send_to(bytes, dst).map(|_| ())
}

fn recv_one(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    let mut cmsg = nix::cmsg_space!(libc::c_int, libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut ttl = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4Ttl(v) | ControlMessageOwned::Ipv6HopLimit(v) => {
                ttl = u8::try_from(v).ok();
            }
            _ => {}
        }
    }
    let src = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let n = msg.bytes;
    Ok((n, src, ttl))
}

fn datagram(buf: &[u8], n: usize, src: SocketAddr, ttl: Option<u8>) -> RxDatagram {
    let bytes = buf.get(..n).unwrap_or(&[]).to_vec();
    let decoded = Packet::decode(&bytes);
    RxDatagram {
        src,
        ttl,
        bytes,
        decoded,
    }
}

/// Reads one datagram if one is waiting, without blocking (`Ok(None)` when
/// the socket is empty). The owner uses it to empty the sockets before it
/// runs its timers.
pub fn try_recv(sock: &UdpSocket) -> io::Result<Option<RxDatagram>> {
    let mut buf = [0u8; 512];
    match recv_one(sock, &mut buf) {
        Ok((n, src, ttl)) => Ok(Some(datagram(&buf, n, src, ttl))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Receive loop of one socket: decode each datagram and hand it to the
/// owner. Ends when the owner drops its receiver.
pub async fn rx_task(sock: Arc<UdpSocket>, to_owner: mpsc::Sender<RxDatagram>) {
    let mut buf = [0u8; 512];
    loop {
        let res = sock
            .async_io(Interest::READABLE, || recv_one(&sock, &mut buf))
            .await;
        match res {
            Ok((n, src, ttl)) => {
                if to_owner.send(datagram(&buf, n, src, ttl)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "bfd receive failed");
            }
        }
    }
}
