//! Gratuitous ARP and unsolicited neighbour advertisement frames.
//!
//! ARP (RFC 826), as an Ethernet payload (ethertype 0x0806):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Hardware type (1)          |    Protocol type (0x0800)     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | HW len (6)    | Proto len (4) |         Operation             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Sender hardware address (6 octets)             |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               | Sender protocol address (4)   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//! |                               |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+   Target hardware address     +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Target protocol address (4)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! RFC 5227 §3: "an ARP Announcement ... is an ARP Request containing the
//! sender's hardware and IP address in the sender fields and the target IP
//! address set to the sender's IP address" (target hardware all zero),
//! broadcast. That is what switches and neighbours learn the new owner from.
//!
//! Unsolicited neighbour advertisement (RFC 4861 §7.2.6): "a node MAY send
//! up to MAX_NEIGHBOR_ADVERTISEMENT unsolicited Neighbor Advertisement
//! messages to the all-nodes multicast address", with the Solicited flag
//! clear, and the Override flag set so receivers replace their cached entry.
//! The Target Link-Layer Address option carries our MAC. Hop limit 255.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ARP_FRAME_LEN: usize = 42;
pub const NA_FRAME_LEN: usize = 14 + 40 + 32;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Errors decoding a captured frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("frame too short: {got} bytes, need {need}")]
    TooShort { got: usize, need: usize },
    #[error("ethertype {0:#06x} is not ARP")]
    NotArp(u16),
    #[error(
        "ARP for hardware type {htype} / protocol {ptype:#06x} (lengths {hlen}/{plen}) is not Ethernet/IPv4"
    )]
    NotEthernetIpv4 {
        htype: u16,
        ptype: u16,
        hlen: u8,
        plen: u8,
    },
    #[error("ARP operation {0} is neither request (1) nor reply (2)")]
    BadOperation(u16),
}

/// A decoded ARP packet (Ethernet/IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub operation: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// An RFC 5227 announcement: request, sender IP = target IP.
    pub fn is_announcement(&self) -> bool {
        self.operation == 1 && self.sender_ip == self.target_ip && self.eth_dst == [0xff; 6]
    }
}

/// The broadcast ARP announcement of `ip` at `mac`.
pub fn arp_announcement(mac: [u8; 6], ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // f[32..38]: target hardware address, zero.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Decodes an Ethernet frame carrying ARP.
pub fn parse_arp(f: &[u8]) -> Result<Arp, PacketError> {
    if f.len() < ARP_FRAME_LEN {
        return Err(PacketError::TooShort {
            got: f.len(),
            need: ARP_FRAME_LEN,
        });
    }
    let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    let mac = |i: usize| {
        let mut m = [0u8; 6];
        m.copy_from_slice(&f[i..i + 6]);
        m
    };
    let ip = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
    if be16(12) != ETH_ARP {
        return Err(PacketError::NotArp(be16(12)));
    }
    let (htype, ptype, hlen, plen) = (be16(14), be16(16), f[18], f[19]);
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) {
        return Err(PacketError::NotEthernetIpv4 {
            htype,
            ptype,
            hlen,
            plen,
        });
    }
    let operation = be16(20);
    if !(1..=2).contains(&operation) {
        return Err(PacketError::BadOperation(operation));
    }
    Ok(Arp {
        eth_dst: mac(0),
        eth_src: mac(6),
        operation,
        sender_mac: mac(22),
        sender_ip: ip(28),
        target_mac: mac(32),
        target_ip: ip(38),
    })
}

/// One's-complement sum for the ICMPv6 checksum.
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        let mut it = c.chunks(2);
        for w in &mut it {
            let v = if w.len() == 2 {
                u16::from_be_bytes([w[0], w[1]])
            } else {
                u16::from_be_bytes([w[0], 0])
            };
            sum += u32::from(v);
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The unsolicited neighbour advertisement of `ip` at `mac`, to all nodes.
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    let mut f = [0u8; NA_FRAME_LEN];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_IPV6.to_be_bytes());
    // IPv6 header: version 6, payload 32, next header 58 (ICMPv6), hop limit 255.
    f[14] = 0x60;
    f[18..20].copy_from_slice(&32u16.to_be_bytes());
    f[20] = 58;
    f[21] = 255;
    f[22..38].copy_from_slice(&ip.octets());
    f[38..54].copy_from_slice(&ALL_NODES.octets());
    // ICMPv6 NA: type 136, code 0, checksum, flags (Override), target, option.
    let icmp = 54;
    f[icmp] = 136;
    f[icmp + 4] = 0x20;
    f[icmp + 8..icmp + 24].copy_from_slice(&ip.octets());
    f[icmp + 24] = 2; // Target Link-Layer Address
    f[icmp + 25] = 1; // length in units of 8 octets
    f[icmp + 26..icmp + 32].copy_from_slice(&mac);
    let mut pseudo = [0u8; 40];
    pseudo[0..16].copy_from_slice(&ip.octets());
    pseudo[16..32].copy_from_slice(&ALL_NODES.octets());
    pseudo[32..36].copy_from_slice(&32u32.to_be_bytes());
    pseudo[39] = 58;
    let sum = checksum(&[&pseudo, &f[icmp..icmp + 32]]);
    f[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn arp_announcement_bytes_both_ways() {
        let f = arp_announcement(MAC, Ipv4Addr::new(192, 0, 2, 10));
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, 0x08,
            0x06, // eth
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen op
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, 192, 0, 2, 10, // sender
            0, 0, 0, 0, 0, 0, 192, 0, 2, 10, // target
        ];
        assert_eq!(f, want);
        let a = parse_arp(&want).unwrap();
        assert!(a.is_announcement());
        assert_eq!(a.sender_mac, MAC);
        assert_eq!(a.sender_ip, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(a.target_mac, [0; 6]);
    }

    #[test]
    fn arp_bad_inputs_one_per_error() {
        let good = arp_announcement(MAC, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(
            parse_arp(&good[..41]),
            Err(PacketError::TooShort { got: 41, need: 42 })
        );
        let mut f = good;
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(parse_arp(&f), Err(PacketError::NotArp(0x0800)));
        let mut f = good;
        f[18] = 8;
        assert!(matches!(
            parse_arp(&f),
            Err(PacketError::NotEthernetIpv4 { hlen: 8, .. })
        ));
        let mut f = good;
        f[21] = 3;
        assert_eq!(parse_arp(&f), Err(PacketError::BadOperation(3)));
    }

    #[test]
    fn unsolicited_na_bytes() {
        let ip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let f = unsolicited_na(MAC, ip);
        // Ethernet: all-nodes multicast MAC, ours, IPv6.
        assert_eq!(
            &f[0..14],
            &[
                0x33, 0x33, 0, 0, 0, 1, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, 0x86, 0xdd
            ]
        );
        // IPv6: v6, payload 32, ICMPv6, hop limit 255, src = VIP, dst = ff02::1.
        assert_eq!(&f[14..22], &[0x60, 0, 0, 0, 0, 32, 58, 255]);
        assert_eq!(&f[22..38], &ip.octets());
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        // ICMPv6 NA, Override set, Solicited and Router clear, target, TLLA option.
        assert_eq!(f[54], 136);
        assert_eq!(f[55], 0);
        assert_eq!(&f[58..62], &[0x20, 0, 0, 0]);
        assert_eq!(&f[62..78], &ip.octets());
        assert_eq!(&f[78..86], &[2, 1, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30]);
        // The checksum verifies: summing the pseudo-header and the message gives 0.
        let mut pseudo = [0u8; 40];
        pseudo[0..16].copy_from_slice(&ip.octets());
        pseudo[16..32].copy_from_slice(&ALL_NODES.octets());
        pseudo[35] = 32;
        pseudo[39] = 58;
        assert_eq!(checksum(&[&pseudo, &f[54..86]]), 0);
        // Known value for this input (computed independently).
        assert_eq!(u16::from_be_bytes([f[56], f[57]]), 0x7acd);
    }
}
