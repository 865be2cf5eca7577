//! The XDP program on crafted packets, through BPF_PROG_TEST_RUN.
//!
//! Each test runs in a thread that unshares a fresh network namespace (gone
//! when the thread ends, even on failure) holding one veth pair with static
//! neighbour entries, so the program's `bpf_fib_lookup` resolves next hops
//! there. `ip_forward` stays 0 as on the real LB; FIB lookups use `lo`
//! (forwarding enabled on lo only), the documented setup. Checksums of every
//! rewritten packet are recomputed from scratch.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use floatlb_dataplane::{
    Dataplane, DataplaneOptions, EndpointSpec, FlowKey, PROTO_TCP, PROTO_UDP, ServiceSpec,
    TcpState, TestProgram, XdpMode, xdp_action,
};

const LB_IF: &str = "flbt0";
const PEER_IF: &str = "flbt1";
const LB_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const EP1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const EP2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
/// On-link but deliberately without a neighbour entry.
const EP_NO_NEIGH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 13);
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const EP1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const EP2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} not runnable ({e}); install iproute2/procps: apt-get install iproute2 procps",
                args[0]
            )
        });
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "xdp_prog_test_run needs root (BPF_PROG_TEST_RUN, network namespaces, bpffs): run `sudo make test`"
    );
}

/// Unloads the datapath (links, pins, bpffs mount) even if the test fails.
struct DpGuard(Option<Dataplane>);

impl Drop for DpGuard {
    fn drop(&mut self) {
        if let Some(dp) = self.0.take() {
            let _ = dp.unload();
        }
    }
}

impl std::ops::Deref for DpGuard {
    type Target = Dataplane;
    fn deref(&self) -> &Dataplane {
        self.0.as_ref().expect("datapath present")
    }
}

impl std::ops::DerefMut for DpGuard {
    fn deref_mut(&mut self) -> &mut Dataplane {
        self.0.as_mut().expect("datapath present")
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Removes the test's pin directory (and its bpffs mount) whatever happened.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let bpf = self.0.join("bpf");
        if bpf.exists() {
            let _ = nix::mount::umount2(&bpf, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_opts_ct(max_conntrack: u32) -> (DataplaneOptions, DirGuard) {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let root = PathBuf::from(format!("/run/floatlb-test-{}-{n}", std::process::id()));
    let opts = DataplaneOptions {
        pin_dir: root.join("bpf"),
        max_services: 64,
        max_conntrack,
        ..DataplaneOptions::default()
    };
    (opts, DirGuard(root))
}

/// Run `f` in a thread inside a fresh network namespace set up for the LB.
fn in_netns<F: FnOnce(&mut DpGuard, u32) + Send + 'static>(f: F) {
    in_netns_ct(4096, f)
}

/// [`in_netns`] with a conntrack table of `max_conntrack` entries.
fn in_netns_ct<F: FnOnce(&mut DpGuard, u32) + Send + 'static>(max_conntrack: u32, f: F) {
    require_root();
    let h = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&[
            "ip", "link", "add", LB_IF, "type", "veth", "peer", "name", PEER_IF,
        ]);
        sh(&["ip", "addr", "add", "10.0.0.1/24", "dev", LB_IF]);
        sh(&["ip", "link", "set", LB_IF, "up"]);
        sh(&["ip", "link", "set", PEER_IF, "up"]);
        for (ip, mac) in [(CLIENT, CLIENT_MAC), (EP1, EP1_MAC), (EP2, EP2_MAC)] {
            sh(&[
                "ip",
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &mac_str(&mac),
                "dev",
                LB_IF,
                "nud",
                "permanent",
            ]);
        }
        sh(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        sh(&["sysctl", "-qw", "net.ipv4.conf.lo.forwarding=1"]);
        let ifindex = nix::net::if_::if_nametoindex(LB_IF).expect("ifindex");
        let (opts, _dir) = test_opts_ct(max_conntrack);
        let mut dp = DpGuard(Some(Dataplane::open(&opts).expect("open datapath")));
        dp.set_fib_lookup_iface(Some("lo")).expect("fib iface");
        f(&mut dp, ifindex);
    });
    if let Err(e) = h.join() {
        std::panic::resume_unwind(e);
    }
}

fn lb_mac() -> [u8; 6] {
    let s = std::fs::read_to_string(format!("/sys/class/net/{LB_IF}/address")).unwrap_or_default();
    let s = if s.is_empty() {
        let out = Command::new("ip")
            .args(["-br", "link", "show", LB_IF])
            .output()
            .expect("ip");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string()
    } else {
        s
    };
    let mut m = [0u8; 6];
    for (i, p) in s.trim().split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).expect("mac");
    }
    m
}

// ---------- packet building and checking ----------

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        s += u32::from(w);
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn l4_csum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &[u8]) -> u16 {
    let mut p = Vec::with_capacity(12 + seg.len());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    p.extend_from_slice(seg);
    csum(&p)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
    h[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn eth(dst: [u8; 6], src: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

fn tcp_seg(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(payload);
    let c = l4_csum(src, dst, PROTO_TCP, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

fn tcp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
) -> Vec<u8> {
    eth(
        dst_mac,
        src_mac,
        &ipv4(
            src,
            dst,
            PROTO_TCP,
            &tcp_seg(src, dst, sport, dport, flags, b"hello"),
        ),
    )
}

fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    with_csum: bool,
) -> Vec<u8> {
    let payload = b"query";
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    if with_csum {
        let c = l4_csum(src, dst, PROTO_UDP, &u);
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    eth(dst_mac, src_mac, &ipv4(src, dst, PROTO_UDP, &u))
}

/// Parsed view of an Ethernet/IPv4/TCP-or-UDP frame.
#[derive(Debug)]
struct Parsed {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    sport: u16,
    dport: u16,
    l4_check: u16,
}

fn parse(f: &[u8]) -> Parsed {
    let ip = &f[14..];
    let l4 = &ip[20..];
    let check_off = if ip[9] == PROTO_TCP { 16 } else { 6 };
    Parsed {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        ttl: ip[8],
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        l4_check: u16::from_be_bytes([l4[check_off], l4[check_off + 1]]),
    }
}

/// Recompute the IPv4 header and L4 checksums from scratch.
fn assert_checksums_valid(f: &[u8]) {
    let ip = &f[14..];
    assert_eq!(csum(&ip[..20]), 0, "IPv4 header checksum invalid");
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let seg = &ip[20..tot];
    match ip[9] {
        PROTO_TCP | PROTO_UDP => {
            assert_eq!(l4_csum(src, dst, ip[9], seg), 0, "L4 checksum invalid")
        }
        1 => assert_eq!(csum(seg), 0, "ICMP checksum invalid"),
        p => panic!("unexpected protocol {p}"),
    }
}

fn web_service(endpoints: Vec<EndpointSpec>, sel: u8) -> ServiceSpec {
    ServiceSpec {
        vip: VIP,
        port: 80,
        proto: PROTO_TCP,
        sel,
        snat_ip: LB_IP,
        endpoints,
        idle_timeout_secs: None,
    }
}

/// UDP port 53 on the VIP, one endpoint (EP1), Maglev.
fn dns_service() -> ServiceSpec {
    ServiceSpec {
        proto: PROTO_UDP,
        port: 53,
        ..web_service(vec![ep(EP1, 1)], 1)
    }
}

fn ep(ip: Ipv4Addr, weight: u8) -> EndpointSpec {
    EndpointSpec {
        ip,
        port: 8080,
        weight,
    }
}

const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;

// ---------- tests ----------

#[test]
fn syn_is_fullnatted_and_reply_translated_back() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1), ep(EP2, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 40000, 80, SYN);
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
            .unwrap();
        assert_eq!(
            out.action,
            xdp_action::TX,
            "one-arm: back out of the ingress interface"
        );
        let p = parse(&out.packet);
        assert_eq!(p.src, LB_IP, "SNAT to the service's snat_ip");
        assert!(
            p.dst == EP1 || p.dst == EP2,
            "DNAT to an endpoint, got {}",
            p.dst
        );
        assert_eq!(p.dport, 8080);
        assert!(
            (1024..=32767).contains(&p.sport),
            "SNAT port {} outside the SNAT range",
            p.sport
        );
        assert_eq!(p.ttl, 63, "TTL decremented");
        assert_eq!(p.src_mac, lbmac);
        assert_eq!(
            p.dst_mac,
            if p.dst == EP1 { EP1_MAC } else { EP2_MAC },
            "next-hop MAC from the FIB"
        );
        assert_checksums_valid(&out.packet);
        assert_eq!(
            &out.packet[out.packet.len() - 5..],
            b"hello",
            "payload untouched"
        );

        // The endpoint answers to the SNAT address and port.
        let ep_mac = p.dst_mac;
        let reply = tcp_frame(lbmac, ep_mac, p.dst, LB_IP, 8080, p.sport, SYN_ACK);
        let back = dp
            .prog_test_run(TestProgram::Floatlb, &reply, Some(ifindex), 1)
            .unwrap();
        assert_eq!(back.action, xdp_action::TX);
        let b = parse(&back.packet);
        assert_eq!(
            (b.src, b.sport, b.dst, b.dport),
            (VIP, 80, CLIENT, 40000),
            "reply seen by the client"
        );
        assert_eq!(b.dst_mac, CLIENT_MAC);
        assert_checksums_valid(&back.packet);

        // The next client packet reuses the mapping.
        let ack = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 40000, 80, ACK);
        let again = parse(
            &dp.prog_test_run(TestProgram::Floatlb, &ack, Some(ifindex), 1)
                .unwrap()
                .packet,
        );
        assert_eq!((again.dst, again.sport), (p.dst, p.sport));

        let ct = dp.conntrack_dump().unwrap();
        assert_eq!(ct.len(), 1, "{ct:?}");
        assert_eq!(
            ct[0].client,
            FlowKey {
                src: CLIENT,
                dst: VIP,
                sport: 40000,
                dport: 80,
                proto: PROTO_TCP
            }
        );
        assert_eq!(ct[0].nat_src, (LB_IP, p.sport));
        assert_eq!(ct[0].nat_dst, (p.dst, 8080));
        assert_eq!(ct[0].tcp_state, TcpState::Established);
        assert_eq!(ct[0].packets, 3);
        let c = dp.counters().unwrap();
        assert_eq!(c.services[0].total.packets, 3);
        let per_ep: u64 = c.services[0].endpoints.iter().map(|(_, c)| c.packets).sum();
        assert_eq!(per_ep, 3);
    });
}

#[test]
fn two_clients_never_share_a_snat_tuple() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 0))
            .unwrap();
        let lbmac = lb_mac();
        let mut seen = std::collections::HashSet::new();
        // Same source port from many clients, all to the single endpoint.
        for i in 0..200u16 {
            let client = Ipv4Addr::new(10, 0, 0, 2);
            let sport = 50000 + (i % 2);
            let src = if i % 2 == 0 {
                client
            } else {
                Ipv4Addr::new(10, 0, 0, 3 + (i / 2 % 50) as u8)
            };
            let syn = tcp_frame(lbmac, CLIENT_MAC, src, VIP, sport + i, 80, SYN);
            let out = dp
                .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
                .unwrap();
            assert_eq!(out.action, xdp_action::TX);
            let p = parse(&out.packet);
            assert!(
                seen.insert(p.sport),
                "SNAT port {} reused for a second flow to {}",
                p.sport,
                p.dst
            );
        }
    });
}

#[test]
fn packets_not_for_a_service_pass_untouched() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        // SSH to the LB's own address, and to the VIP on a port with no service.
        for (dst, dport) in [(LB_IP, 22u16), (VIP, 22)] {
            let f = tcp_frame(lbmac, CLIENT_MAC, CLIENT, dst, 40001, dport, SYN);
            let out = dp
                .prog_test_run(TestProgram::Floatlb, &f, Some(ifindex), 1)
                .unwrap();
            assert_eq!(out.action, xdp_action::PASS, "to {dst}:{dport}");
            assert_eq!(out.packet, f, "passed packet modified");
        }
        // ARP.
        let mut arp = eth([0xff; 6], CLIENT_MAC, &[0u8; 28]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(
            dp.prog_test_run(TestProgram::Floatlb, &arp, Some(ifindex), 1)
                .unwrap()
                .action,
            xdp_action::PASS
        );
        // BACKUP: even service traffic passes.
        dp.set_active(false).unwrap();
        let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 40002, 80, SYN);
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
            .unwrap();
        assert_eq!((out.action, out.packet == syn), (xdp_action::PASS, true));
        assert!(
            dp.conntrack_dump().unwrap().is_empty(),
            "BACKUP must not create flows"
        );
    });
}

#[test]
fn only_frames_unicast_to_the_ingress_mac_are_load_balanced() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        dp.set_interface_mac(ifindex, Some(lbmac)).unwrap();
        assert_eq!(dp.interface_mac(ifindex).unwrap(), Some(lbmac));
        // Another host's MAC (flooded unknown unicast), broadcast, multicast:
        // not ours, passed untouched and no flow created.
        let foreign = [0x02, 0, 0, 0, 0, 0x77];
        for dst_mac in [foreign, [0xff; 6], [0x01, 0x00, 0x5e, 0, 0, 0x64]] {
            let syn = tcp_frame(dst_mac, CLIENT_MAC, CLIENT, VIP, 40000, 80, SYN);
            let out = dp
                .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
                .unwrap();
            assert_eq!(out.action, xdp_action::PASS, "to {}", mac_str(&dst_mac));
            assert_eq!(out.packet, syn, "passed frame modified");
        }
        assert!(
            dp.conntrack_dump().unwrap().is_empty(),
            "a frame for another MAC created a flow"
        );
        // The same SYN to our MAC is fullnatted.
        let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 40000, 80, SYN);
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
            .unwrap();
        assert_eq!(out.action, xdp_action::TX);
        let p = parse(&out.packet);
        assert_eq!((p.src, p.dst), (LB_IP, EP1));
        assert_eq!(dp.conntrack_dump().unwrap().len(), 1);
        // Without an entry (e.g. attached by an older agent) nothing is
        // checked: the foreign-MAC frame of an established flow is forwarded.
        dp.set_interface_mac(ifindex, None).unwrap();
        assert_eq!(dp.interface_mac(ifindex).unwrap(), None);
        let ack = tcp_frame(foreign, CLIENT_MAC, CLIENT, VIP, 40000, 80, ACK);
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &ack, Some(ifindex), 1)
            .unwrap();
        assert_eq!(out.action, xdp_action::TX, "no entry, no check");
    });
}

#[test]
fn icmp_frag_needed_for_a_tracked_flow_reaches_the_client() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 40000, 80, SYN);
        let fwd = dp
            .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
            .unwrap()
            .packet;
        let p = parse(&fwd);
        // A router on the endpoint side quotes the packet we sent (all 45 bytes).
        let quoted = &fwd[14..];
        let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0xdc];
        icmp.extend_from_slice(quoted);
        let c = csum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let err = eth(lbmac, EP1_MAC, &ipv4(EP1, LB_IP, 1, &icmp));
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &err, Some(ifindex), 1)
            .unwrap();
        assert_eq!(out.action, xdp_action::TX);
        let f = &out.packet;
        assert_checksums_valid(f);
        let outer = &f[14..34];
        assert_eq!(
            Ipv4Addr::new(outer[12], outer[13], outer[14], outer[15]),
            VIP,
            "outer source"
        );
        assert_eq!(
            Ipv4Addr::new(outer[16], outer[17], outer[18], outer[19]),
            CLIENT,
            "outer destination"
        );
        assert_eq!(&f[0..6], &CLIENT_MAC);
        assert_eq!(&f[34..36], &[3, 4], "still frag-needed");
        assert_eq!(&f[40..42], &[0x05, 0xdc], "MTU kept");
        let inner = &f[42..62];
        assert_eq!(csum(inner), 0, "inner IP checksum invalid");
        assert_eq!(
            Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]),
            CLIENT
        );
        assert_eq!(
            Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]),
            VIP
        );
        let il4 = &f[62..82];
        let orig_tcp = &syn[34..54];
        assert_eq!(&il4[0..4], &orig_tcp[0..4], "inner ports are the client's");
        assert_eq!(
            &il4[16..18],
            &orig_tcp[16..18],
            "inner TCP checksum equals the client's original"
        );
        let _ = p;
        // An ICMP error about an unknown flow is not ours.
        let mut stray = quoted.to_vec();
        stray[22] ^= 0xff; // change the quoted destination port
        let mut icmp2 = vec![3u8, 4, 0, 0, 0, 0, 0x05, 0xdc];
        icmp2.extend_from_slice(&stray);
        let err2 = eth(lbmac, EP1_MAC, &ipv4(EP1, LB_IP, 1, &icmp2));
        assert_eq!(
            dp.prog_test_run(TestProgram::Floatlb, &err2, Some(ifindex), 1)
                .unwrap()
                .action,
            xdp_action::PASS
        );
    });
}

#[test]
fn udp_zero_checksum_stays_zero() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&dns_service()).unwrap();
        let lbmac = lb_mac();
        let zero = udp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 33000, 53, false);
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &zero, Some(ifindex), 1)
            .unwrap();
        assert_eq!(out.action, xdp_action::TX);
        let p = parse(&out.packet);
        assert_eq!((p.dst, p.dport), (EP1, 8080));
        assert_eq!(p.l4_check, 0, "zero UDP checksum must stay zero");
        assert_eq!(csum(&out.packet[14..34]), 0, "IP header checksum invalid");
        // With a checksum, it is updated and valid.
        let with = udp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 33001, 53, true);
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &with, Some(ifindex), 1)
            .unwrap();
        assert_ne!(parse(&out.packet).l4_check, 0);
        assert_checksums_valid(&out.packet);
    });
}

#[test]
fn echo_to_vip_is_answered() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
        let c = csum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let req = eth(lbmac, CLIENT_MAC, &ipv4(CLIENT, VIP, 1, &icmp));
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &req, Some(ifindex), 1)
            .unwrap();
        assert_eq!(out.action, xdp_action::TX);
        let f = &out.packet;
        assert_checksums_valid(f);
        assert_eq!(f[34], 0, "echo reply");
        assert_eq!((&f[0..6], &f[6..12]), (&CLIENT_MAC[..], &lbmac[..]));
        assert_eq!(&f[26..30], &VIP.octets());
        assert_eq!(&f[30..34], &CLIENT.octets());
        // Echo to a non-VIP address goes to the stack.
        let req2 = eth(lbmac, CLIENT_MAC, &ipv4(CLIENT, LB_IP, 1, &icmp));
        assert_eq!(
            dp.prog_test_run(TestProgram::Floatlb, &req2, Some(ifindex), 1)
                .unwrap()
                .action,
            xdp_action::PASS
        );
    });
}

#[test]
fn missing_neighbour_drops_counts_and_reports_next_hop() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP_NO_NEIGH, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 40000, 80, SYN);
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
            .unwrap();
        assert_eq!(
            out.action,
            xdp_action::DROP,
            "never handed to the stack (it would reset)"
        );
        assert_eq!(dp.counters().unwrap().drops.no_neigh, 1);
        assert_eq!(dp.take_unresolved_neighbours(), vec![EP_NO_NEIGH]);
        // Once resolved, the retransmitted SYN goes through on the same mapping.
        sh(&[
            "ip",
            "neigh",
            "replace",
            &EP_NO_NEIGH.to_string(),
            "lladdr",
            "02:00:00:00:00:13",
            "dev",
            LB_IF,
            "nud",
            "permanent",
        ]);
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
            .unwrap();
        assert_eq!(out.action, xdp_action::TX);
        assert_eq!(parse(&out.packet).dst, EP_NO_NEIGH);
    });
}

#[test]
fn weighted_maglev_spreads_new_flows_by_weight() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1), ep(EP2, 3)], 1))
            .unwrap();
        let lbmac = lb_mac();
        let (mut n1, mut n2) = (0u32, 0u32);
        for i in 0..2000u16 {
            let src = Ipv4Addr::new(10, 0, 0, 2 + (i % 7) as u8);
            let syn = tcp_frame(lbmac, CLIENT_MAC, src, VIP, 10000 + i, 80, SYN);
            let p = parse(
                &dp.prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
                    .unwrap()
                    .packet,
            );
            if p.dst == EP1 { n1 += 1 } else { n2 += 1 }
        }
        let share = f64::from(n2) / 2000.0;
        println!(
            "maglev weights 1:3 -> flows {n1}:{n2} (weight-3 share {share:.3}, want 0.75 +- 0.05)"
        );
        assert!((share - 0.75).abs() < 0.05, "share {share}");
    });
}

#[test]
fn restart_keeps_link_conntrack_and_services() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let mode = dp.attach(LB_IF, XdpMode::Auto).expect("attach");
        assert_eq!(
            dp.interface_mac(ifindex).unwrap(),
            Some(lb_mac()),
            "attach records the interface's MAC"
        );
        assert_eq!(
            dp.attach(LB_IF, XdpMode::Auto).unwrap(),
            mode,
            "attach is idempotent"
        );
        let lbmac = lb_mac();
        let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 40000, 80, SYN);
        let first = parse(
            &dp.prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
                .unwrap()
                .packet,
        );
        let opts = dp.options().clone();
        dp.0.take().unwrap().release();
        // "Restarted agent": everything is re-opened from the pins.
        let mut dp2 = DpGuard(Some(Dataplane::open(&opts).expect("re-open")));
        assert_eq!(dp2.attached(), vec![(LB_IF.to_string(), mode)]);
        assert_eq!(dp2.services().unwrap().len(), 1);
        assert_eq!(dp2.conntrack_dump().unwrap().len(), 1);
        assert_eq!(dp2.attach(LB_IF, XdpMode::Auto).unwrap(), mode);
        let again = parse(
            &dp2.prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
                .unwrap()
                .packet,
        );
        assert_eq!(
            (again.dst, again.sport),
            (first.dst, first.sport),
            "flow kept its mapping"
        );
        dp2.detach(LB_IF).unwrap();
        assert!(dp2.attached().is_empty());
        assert_eq!(
            dp2.interface_mac(ifindex).unwrap(),
            None,
            "detach forgets the MAC"
        );
        let out = Command::new("ip")
            .args(["link", "show", LB_IF])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("xdp"),
            "XDP still attached after detach"
        );
    });
}

#[test]
fn conntrack_insert_delete_and_expire() {
    in_netns(|dp, ifindex| {
        let mut svc = web_service(vec![ep(EP1, 1), ep(EP2, 1)], 1);
        svc.idle_timeout_secs = Some(20);
        dp.upsert_service(&svc).unwrap();
        let lbmac = lb_mac();
        let now = floatlb_dataplane::monotonic_ns();
        let rec = |sport: u16, last_seen_ns: u64| floatlb_dataplane::CtRecord {
            client: FlowKey {
                src: CLIENT,
                dst: VIP,
                sport,
                dport: 80,
                proto: PROTO_TCP,
            },
            nat_src: (LB_IP, 20000 + sport / 1000),
            nat_dst: (EP2, 8080),
            tcp_state: TcpState::Established,
            packets: 10,
            bytes: 1000,
            last_seen_ns,
        };
        // A flow synced from the peer is used as is, in both directions.
        dp.conntrack_insert(&rec(41000, now)).unwrap();
        let pkt = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 41000, 80, ACK);
        let p = parse(
            &dp.prog_test_run(TestProgram::Floatlb, &pkt, Some(ifindex), 1)
                .unwrap()
                .packet,
        );
        assert_eq!((p.src, p.sport, p.dst, p.dport), (LB_IP, 20041, EP2, 8080));
        let reply = tcp_frame(lbmac, EP2_MAC, EP2, LB_IP, 8080, 20041, ACK);
        let b = parse(
            &dp.prog_test_run(TestProgram::Floatlb, &reply, Some(ifindex), 1)
                .unwrap()
                .packet,
        );
        assert_eq!((b.src, b.sport, b.dst, b.dport), (VIP, 80, CLIENT, 41000));
        let dumped = dp.conntrack_dump().unwrap();
        assert_eq!(dumped.len(), 1);
        assert_eq!(dumped[0].packets, 12, "synced counters plus two packets");

        // Idle for a minute while the service's idle timeout is 20 s: expired.
        dp.conntrack_insert(&rec(42000, now.saturating_sub(60 * 1_000_000_000)))
            .unwrap();
        // A SYN-state flow idle for 45 s (SYN timeout 30 s): expired too.
        let mut syn = rec(43000, now.saturating_sub(45 * 1_000_000_000));
        syn.tcp_state = TcpState::Syn;
        dp.conntrack_insert(&syn).unwrap();
        assert_eq!(dp.conntrack_dump().unwrap().len(), 3);
        // The agent expires from a thread of its own, through its own
        // descriptors of the pinned maps.
        let mut sweeper = dp.conntrack_sweeper().unwrap();
        for p in [&pkt, &reply] {
            let out = dp
                .prog_test_run(TestProgram::Floatlb, p, Some(ifindex), 1)
                .unwrap();
            assert_eq!(out.action, xdp_action::TX);
        }
        assert_eq!(
            dp.flow_cache_len().unwrap(),
            2,
            "the live flow's directions are cached"
        );
        assert_eq!(
            std::thread::spawn(move || sweeper.expire())
                .join()
                .unwrap()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            dp.flow_cache_len().unwrap(),
            0,
            "an expiry that removed flows invalidates every cached flow"
        );
        assert_eq!(dp.expire_conntrack().unwrap(), 0, "nothing else is idle");
        let left = dp.conntrack_dump().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].client.sport, 41000);
        assert_eq!(left[0].packets, 14, "every packet counted, cached or not");

        // Delete by the reply tuple removes both directions.
        dp.conntrack_delete(&FlowKey {
            src: EP2,
            dst: LB_IP,
            sport: 8080,
            dport: 20041,
            proto: PROTO_TCP,
        })
        .unwrap();
        assert!(dp.conntrack_dump().unwrap().is_empty());
        dp.conntrack_delete(&rec(41000, now).client)
            .expect("deleting an unknown flow is not an error");
        // Bad input is rejected with the field named.
        let mut bad = rec(44000, now);
        bad.nat_dst.1 = 0;
        let e = dp.conntrack_insert(&bad).unwrap_err().to_string();
        assert!(e.contains("nat port"), "{e}");
    });
}

#[test]
fn endpoint_set_update_keeps_flows_and_moves_only_removed_share() {
    in_netns(|dp, ifindex| {
        let eps: Vec<_> = (0..4)
            .map(|i| ep(Ipv4Addr::new(10, 0, 0, 11 + i), 1))
            .collect();
        for i in 13..15u8 {
            sh(&[
                "ip",
                "neigh",
                "replace",
                &format!("10.0.0.{i}"),
                "lladdr",
                &format!("02:00:00:00:00:{i}"),
                "dev",
                LB_IF,
                "nud",
                "permanent",
            ]);
        }
        dp.upsert_service(&web_service(eps.clone(), 1)).unwrap();
        let lbmac = lb_mac();
        let pick = |dp: &mut DpGuard, sport: u16| {
            let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, sport, 80, SYN);
            parse(
                &dp.prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
                    .unwrap()
                    .packet,
            )
            .dst
        };
        let before: Vec<_> = (0..400u16).map(|i| pick(dp, 20000 + i)).collect();
        // Drop endpoint 10.0.0.14; new flows (fresh ports) are compared.
        let mut fewer = eps.clone();
        fewer.retain(|e| e.ip != Ipv4Addr::new(10, 0, 0, 14));
        dp.upsert_service(&web_service(fewer, 1)).unwrap();
        assert_eq!(dp.services().unwrap()[0].endpoints.len(), 3);
        // Existing flows keep their endpoint (conntrack), even the removed one.
        assert_eq!(pick(dp, 20000), before[0]);
        let after: Vec<_> = (0..400u16).map(|i| pick(dp, 30000 + i)).collect();
        let again: Vec<_> = (0..400u16)
            .map(|i| {
                dp.conntrack_delete(&FlowKey {
                    src: CLIENT,
                    dst: VIP,
                    sport: 20000 + i,
                    dport: 80,
                    proto: PROTO_TCP,
                })
                .unwrap();
                pick(dp, 20000 + i)
            })
            .collect();
        let moved = before
            .iter()
            .zip(&again)
            .filter(|(b, a)| **b != Ipv4Addr::new(10, 0, 0, 14) && b != a)
            .count();
        println!(
            "maglev in the datapath: flows of surviving endpoints that moved after removing 1 of 4: {moved}/400"
        );
        // A live removal keeps every survivor's Maglev slots.
        assert_eq!(moved, 0, "{moved} flows of surviving endpoints moved");
        assert!(
            after.iter().all(|d| *d != Ipv4Addr::new(10, 0, 0, 14)),
            "removed endpoint still chosen"
        );
    });
}

#[test]
fn new_flows_pick_up_a_changed_neighbour_after_invalidation() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        let first = |dp: &mut DpGuard, sport: u16| {
            let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, sport, 80, SYN);
            parse(
                &dp.prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
                    .unwrap()
                    .packet,
            )
            .dst_mac
        };
        assert_eq!(first(dp, 40000), EP1_MAC);
        let new_mac = [0x02, 0, 0, 0, 0x99, 0x11];
        sh(&[
            "ip",
            "neigh",
            "replace",
            &EP1.to_string(),
            "lladdr",
            &mac_str(&new_mac),
            "dev",
            LB_IF,
            "nud",
            "permanent",
        ]);
        dp.invalidate_nexthops().unwrap();
        assert_eq!(
            first(dp, 40001),
            new_mac,
            "new flow still uses the old next-hop MAC"
        );
    });
}

/// Sets up one established TCP flow (SYN, SYN-ACK) to EP1; returns the
/// SNAT port.
fn establish(dp: &mut DpGuard, ifindex: u32, lbmac: [u8; 6], sport: u16) -> u16 {
    let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, sport, 80, SYN);
    let out = dp
        .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
        .unwrap();
    assert_eq!(out.action, xdp_action::TX);
    let snat_port = parse(&out.packet).sport;
    let synack = tcp_frame(lbmac, EP1_MAC, EP1, LB_IP, 8080, snat_port, SYN_ACK);
    let back = dp
        .prog_test_run(TestProgram::Floatlb, &synack, Some(ifindex), 1)
        .unwrap();
    assert_eq!(back.action, xdp_action::TX);
    snat_port
}

#[test]
fn cached_established_flow_is_forwarded_exactly_like_the_conntrack_path() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        let snat_port = establish(dp, ifindex, lbmac, 40100);
        assert_eq!(
            dp.flow_cache_len().unwrap(),
            1,
            "the SYN is not cached; the SYN-ACK established the flow and its direction is"
        );

        // The first data packet of each direction goes through conntrack and
        // fills the cache; the following ones are served from it.
        let data = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 40100, 80, ACK);
        let reply = tcp_frame(lbmac, EP1_MAC, EP1, LB_IP, 8080, snat_port, ACK);
        let mut outs = Vec::new();
        for _ in 0..40 {
            for pkt in [&data, &reply] {
                let out = dp
                    .prog_test_run(TestProgram::Floatlb, pkt, Some(ifindex), 1)
                    .unwrap();
                assert_eq!(out.action, xdp_action::TX);
                assert_checksums_valid(&out.packet);
                outs.push(out.packet);
            }
        }
        assert_eq!(
            dp.flow_cache_len().unwrap(),
            2,
            "both directions of the established flow are cached"
        );
        for (i, out) in outs.iter().enumerate().skip(2) {
            assert_eq!(
                out,
                &outs[i % 2],
                "packet {i}: the cached path must write the same bytes as conntrack did"
            );
        }
        let p = parse(&outs[0]);
        assert_eq!(
            (p.src, p.sport, p.dst, p.dport, p.ttl, p.dst_mac),
            (LB_IP, snat_port, EP1, 8080, 63, EP1_MAC)
        );
        let b = parse(&outs[1]);
        assert_eq!((b.src, b.sport, b.dst, b.dport), (VIP, 80, CLIENT, 40100));

        // Counters include what the caches have not written back yet.
        let ct = dp.conntrack_dump().unwrap();
        assert_eq!(ct.len(), 1);
        assert_eq!(ct[0].packets, 2 + 80, "SYN, SYN-ACK and 80 data packets");
        assert_eq!(ct[0].tcp_state, TcpState::Established);
        let c = dp.counters().unwrap();
        assert_eq!(c.services[0].total.packets, 2 + 80);

        // TTL 1 is never forwarded, cached or not.
        let mut dying = data.clone();
        dying[14 + 8] = 1;
        dying[14 + 10..14 + 12].fill(0);
        let hc = csum(&dying[14..34]);
        dying[14 + 10..14 + 12].copy_from_slice(&hc.to_be_bytes());
        let out = dp
            .prog_test_run(TestProgram::Floatlb, &dying, Some(ifindex), 1)
            .unwrap();
        assert_eq!(out.action, xdp_action::DROP);
        assert_eq!(dp.counters().unwrap().drops.ttl, 1);

        // A FIN leaves the cache: the state change is tracked.
        let fin = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 40100, 80, 0x11);
        dp.prog_test_run(TestProgram::Floatlb, &fin, Some(ifindex), 1)
            .unwrap();
        dp.prog_test_run(TestProgram::Floatlb, &data, Some(ifindex), 1)
            .unwrap();
        assert_eq!(dp.conntrack_dump().unwrap()[0].tcp_state, TcpState::Fin);
        assert_eq!(
            dp.flow_cache_len().unwrap(),
            1,
            "only the reply direction is left"
        );
    });
}

#[test]
fn cached_udp_flow_keeps_a_zero_checksum_and_fixes_a_real_one() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&dns_service()).unwrap();
        let lbmac = lb_mac();
        let zero = udp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 33100, 53, false);
        let with = udp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 33100, 53, true);
        for i in 0..6 {
            let out = dp
                .prog_test_run(TestProgram::Floatlb, &zero, Some(ifindex), 1)
                .unwrap();
            assert_eq!(out.action, xdp_action::TX);
            assert_eq!(
                parse(&out.packet).l4_check,
                0,
                "packet {i}: zero must stay zero"
            );
            assert_eq!(csum(&out.packet[14..34]), 0, "IP header checksum invalid");
            let out = dp
                .prog_test_run(TestProgram::Floatlb, &with, Some(ifindex), 1)
                .unwrap();
            assert_ne!(parse(&out.packet).l4_check, 0);
            assert_checksums_valid(&out.packet);
        }
        assert_eq!(dp.flow_cache_len().unwrap(), 1);
    });
}

#[test]
fn conntrack_changes_reach_cached_flows_at_once() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1), ep(EP2, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        // Pick a client port whose flow Maglev sends to EP1.
        let sport = (41000..41100)
            .find(|&p| {
                let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, p, 80, SYN);
                let out = dp
                    .prog_test_run(TestProgram::Floatlb, &syn, Some(ifindex), 1)
                    .unwrap();
                parse(&out.packet).dst == EP1
            })
            .expect("some flow goes to EP1");
        let rec = dp
            .conntrack_dump()
            .unwrap()
            .into_iter()
            .find(|r| r.client.sport == sport)
            .unwrap();
        let synack = tcp_frame(lbmac, EP1_MAC, EP1, LB_IP, 8080, rec.nat_src.1, SYN_ACK);
        dp.prog_test_run(TestProgram::Floatlb, &synack, Some(ifindex), 1)
            .unwrap();
        let data = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, sport, 80, ACK);
        let send = |dp: &mut DpGuard| {
            dp.prog_test_run(TestProgram::Floatlb, &data, Some(ifindex), 1)
                .unwrap()
        };
        for _ in 0..3 {
            assert_eq!(parse(&send(dp).packet).dst, EP1);
        }
        assert!(dp.flow_cache_len().unwrap() >= 1);

        // The peer's view of the flow replaces ours (connection sync): the
        // very next packet follows it.
        let mut moved = rec;
        moved.nat_dst = (EP2, 8080);
        moved.tcp_state = TcpState::Established;
        dp.conntrack_insert(&moved).unwrap();
        let p = parse(&send(dp).packet);
        assert_eq!((p.dst, p.dst_mac), (EP2, EP2_MAC));

        // Deleted, with its service gone: the next packet is not ours.
        dp.conntrack_delete(&rec.client).unwrap();
        dp.remove_service(floatlb_dataplane::ServiceKeySpec {
            vip: VIP,
            port: 80,
            proto: PROTO_TCP,
        })
        .unwrap();
        assert_eq!(send(dp).action, xdp_action::PASS);
        assert_eq!(dp.flow_cache_len().unwrap(), 0);
    });
}

#[test]
fn removing_an_endpoint_flushes_its_udp_flows_and_keeps_its_tcp_flows() {
    in_netns(|dp, ifindex| {
        let both = || vec![ep(EP1, 1), ep(EP2, 1)];
        let udp = |eps| ServiceSpec {
            proto: PROTO_UDP,
            port: 53,
            ..web_service(eps, 0)
        };
        dp.upsert_service(&udp(both())).unwrap();
        dp.upsert_service(&web_service(both(), 0)).unwrap();
        let lbmac = lb_mac();
        let send = |dp: &mut DpGuard, f: &[u8]| {
            let out = dp
                .prog_test_run(TestProgram::Floatlb, f, Some(ifindex), 1)
                .unwrap();
            assert_eq!(out.action, xdp_action::TX);
            parse(&out.packet).dst
        };
        // Round-robin: the flows alternate between the two endpoints.
        let mut udp_to_ep2 = Vec::new();
        for port in 34000..34006u16 {
            let d = udp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, port, 53, true);
            if send(dp, &d) == EP2 {
                udp_to_ep2.push(port);
            }
        }
        let mut tcp_to_ep2 = 0;
        for port in 42000..42006u16 {
            let syn = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, port, 80, SYN);
            tcp_to_ep2 += usize::from(send(dp, &syn) == EP2);
        }
        assert_eq!((udp_to_ep2.len(), tcp_to_ep2), (3, 3));

        // EP2 leaves both services; the next sweep (the agent's thread)
        // flushes its UDP flows only.
        dp.upsert_service(&udp(vec![ep(EP1, 1)])).unwrap();
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 0))
            .unwrap();
        let mut sweeper = dp.conntrack_sweeper().unwrap();
        // The sweep names each removed flow by its client tuple (what sync
        // streams to the peer).
        let mut gone: Vec<(Ipv4Addr, u16, u8)> = sweeper
            .expire()
            .unwrap()
            .iter()
            .map(|k| (k.src, k.sport, k.proto))
            .collect();
        gone.sort();
        let mut want: Vec<(Ipv4Addr, u16, u8)> =
            udp_to_ep2.iter().map(|p| (CLIENT, *p, PROTO_UDP)).collect();
        want.sort();
        assert_eq!(gone, want, "the three UDP flows to EP2");
        assert!(sweeper.expire().unwrap().is_empty(), "flushed once");
        let ct = dp.conntrack_dump().unwrap();
        let to_ep2 = |proto| {
            ct.iter()
                .filter(|r| r.client.proto == proto && r.nat_dst.0 == EP2)
                .count()
        };
        assert_eq!(to_ep2(PROTO_UDP), 0);
        assert_eq!(to_ep2(PROTO_TCP), 3, "TCP flows finish on their endpoint");
        // The next datagram of a flushed flow is balanced afresh.
        let d = udp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, udp_to_ep2[0], 53, true);
        assert_eq!(send(dp, &d), EP1);

        // A removed UDP service takes its flows with it.
        dp.remove_service(floatlb_dataplane::ServiceKeySpec {
            vip: VIP,
            port: 53,
            proto: PROTO_UDP,
        })
        .unwrap();
        assert_eq!(sweeper.expire().unwrap().len(), 4);
        let ct = dp.conntrack_dump().unwrap();
        assert!(ct.iter().all(|r| r.client.proto == PROTO_TCP), "{ct:?}");
    });
}

/// Pins left by another floatlb version (here: a map of another layout
/// pinned under FLB_CONFIG's name) are refused with an error that names
/// the map, both layouts and the way out; nothing is loaded or changed.
#[test]
fn pins_of_another_layout_are_refused_with_a_clear_error() {
    in_netns(|dp, _ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let opts = dp.options().clone();
        dp.0.take().unwrap().release();
        let maps = opts.pin_dir.join("maps");
        std::fs::remove_file(maps.join("FLB_CONFIG")).unwrap();
        std::fs::rename(maps.join("FLB_DROPS"), maps.join("FLB_CONFIG")).unwrap();
        let prog = std::fs::metadata(opts.pin_dir.join("prog")).unwrap();
        let e = Dataplane::open(&opts).unwrap_err().to_string();
        println!("re-open over foreign pins: {e}");
        for part in [
            "FLB_CONFIG",
            "PerCpuArray",
            "value 8 bytes",
            "value 24 bytes",
            "another floatlb version",
            &opts.pin_dir.display().to_string(),
        ] {
            assert!(e.contains(part), "{part:?} missing from: {e}");
        }
        assert_eq!(
            std::fs::metadata(opts.pin_dir.join("prog"))
                .unwrap()
                .modified()
                .unwrap(),
            prog.modified().unwrap(),
            "the pinned program must not be replaced"
        );
        assert!(maps.join("FLB_SERVICES").exists(), "pins are left alone");
    });
}

// ---------- connection sync (docs/SYNC.md) ----------

#[test]
fn with_sync_new_flows_and_state_changes_are_reported_and_ports_split_by_node() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        let mut reports = dp.flow_reports().unwrap();
        // Off: flows are created, nothing is reported.
        establish(dp, ifindex, lbmac, 41000);
        assert!(
            reports
                .wait(std::time::Duration::from_millis(50))
                .is_empty()
        );
        for (part, range) in [(1u8, 1024..=16895u16), (2, 16896..=32767)] {
            dp.set_flow_sync(true, part).unwrap();
            for i in 0..16u16 {
                let cport = 42000 + u16::from(part) * 100 + i;
                let snat = establish(dp, ifindex, lbmac, cport);
                assert!(range.contains(&snat), "node part {part}: SNAT port {snat}");
                let mut got = Vec::new();
                while got.len() < 2 {
                    let r = reports.wait(std::time::Duration::from_secs(1));
                    assert!(!r.is_empty(), "no report for client port {cport}");
                    got.extend(r);
                }
                // The SYN created it, the SYN-ACK made it established; both
                // reports carry the client tuple and the forward rewrite.
                let states: Vec<TcpState> = got.iter().map(|r| r.tcp_state).collect();
                assert_eq!(states, vec![TcpState::Syn, TcpState::Established]);
                for r in &got {
                    assert_eq!(
                        (r.client.src, r.client.sport, r.client.dst, r.client.dport),
                        (CLIENT, cport, VIP, 80)
                    );
                    assert_eq!((r.nat_src, r.nat_dst), ((LB_IP, snat), (EP1, 8080)));
                }
            }
        }
        assert_eq!(reports.lost(), 0);
        assert!(dp.set_flow_sync(true, 3).is_err(), "part 3 does not exist");
    });
}

#[test]
fn a_passive_syncing_node_drops_tracked_flows_instead_of_passing_them_to_its_stack() {
    in_netns(|dp, ifindex| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let lbmac = lb_mac();
        let snat = establish(dp, ifindex, lbmac, 43000);
        dp.set_active(false).unwrap();
        let ack = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 43000, 80, ACK);
        let reply = tcp_frame(lbmac, EP1_MAC, EP1, LB_IP, 8080, snat, ACK);
        let untracked = tcp_frame(lbmac, CLIENT_MAC, CLIENT, VIP, 43001, 80, SYN);
        let run = |dp: &mut DpGuard, f: &[u8]| {
            dp.prog_test_run(TestProgram::Floatlb, f, Some(ifindex), 1)
                .unwrap()
                .action
        };
        // Sync off: a BACKUP passes everything, as before.
        for f in [&ack, &reply, &untracked] {
            assert_eq!(run(dp, f), xdp_action::PASS);
        }
        dp.set_flow_sync(true, 1).unwrap();
        assert_eq!(
            run(dp, &ack),
            xdp_action::DROP,
            "client packet of a tracked flow"
        );
        assert_eq!(
            run(dp, &reply),
            xdp_action::DROP,
            "endpoint reply of a tracked flow"
        );
        assert_eq!(
            run(dp, &untracked),
            xdp_action::PASS,
            "not tracked: the stack's"
        );
    });
}

/// Installing a bulk resync into the datapath (what the BACKUP does),
/// through a `FlowSyncTable` in batches of 1024 as the frames carry them.
/// Prints the rate; the target (>= 200 000 flows/s) is judged in
/// docs/BENCHMARKS.md on a quiet machine.
#[test]
fn bulk_install_rate() {
    let n: u32 = 200_000;
    in_netns_ct(2 * n + 1024, move |dp, _| {
        dp.upsert_service(&web_service(vec![ep(EP1, 1)], 1))
            .unwrap();
        let recs: Vec<floatlb_dataplane::CtRecord> = (0..n)
            .map(|i| floatlb_dataplane::CtRecord {
                client: FlowKey {
                    src: Ipv4Addr::from(0x0a01_0000 + (i >> 15)),
                    dst: VIP,
                    sport: (i & 0x7fff) as u16 + 1,
                    dport: 80,
                    proto: PROTO_TCP,
                },
                nat_src: (LB_IP, 1024 + (i % 31_000) as u16),
                nat_dst: (Ipv4Addr::from(0x0a02_0000 + (i / 31_000)), 8080),
                tcp_state: TcpState::Established,
                packets: 0,
                bytes: 0,
                last_seen_ns: floatlb_dataplane::monotonic_ns(),
            })
            .collect();
        let mut table = dp.flow_sync_table().unwrap();
        let t0 = std::time::Instant::now();
        for chunk in recs.chunks(1024) {
            table.insert(chunk).unwrap();
        }
        let took = t0.elapsed();
        let dumped = table.dump().unwrap().len();
        println!(
            "bulk install into the datapath: {n} flows in {:.0} ms = {:.0} flows/s (target >= 200000)",
            took.as_secs_f64() * 1000.0,
            f64::from(n) / took.as_secs_f64()
        );
        assert_eq!(dumped, n as usize);
    });
}

#[test]
fn a_synced_batch_with_one_bad_record_installs_nothing_and_names_the_field() {
    in_netns(|dp, _| {
        let good = floatlb_dataplane::CtRecord {
            client: FlowKey {
                src: CLIENT,
                dst: VIP,
                sport: 44000,
                dport: 80,
                proto: PROTO_TCP,
            },
            nat_src: (LB_IP, 20000),
            nat_dst: (EP1, 8080),
            tcp_state: TcpState::Established,
            packets: 0,
            bytes: 0,
            last_seen_ns: floatlb_dataplane::monotonic_ns(),
        };
        let bad = floatlb_dataplane::CtRecord {
            nat_src: (LB_IP, 0),
            ..good
        };
        let mut table = dp.flow_sync_table().unwrap();
        let err = table.insert(&[good, bad]).unwrap_err().to_string();
        assert!(err.contains("nat port") && err.contains(":0"), "{err}");
        assert!(table.dump().unwrap().is_empty(), "half-applied batch");
    });
}
