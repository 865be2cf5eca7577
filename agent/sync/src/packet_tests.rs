//! Byte vectors both ways (the MACs were computed independently, with
//! Python's `hmac`), and one bad vector per [`DecodeError`] variant.

use super::*;

const NONCE: u64 = 0x0102_0304_0506_0708;

fn key() -> SyncKey {
    SyncKey::new(b"floatlb-test-key-0123\n", "test").unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn tcp_record() -> FlowRecord {
    FlowRecord {
        key: FlowKey {
            proto: 6,
            client: Ipv4Addr::new(10, 1, 0, 2),
            vip: Ipv4Addr::new(10, 1, 0, 100),
            client_port: 40000,
            vip_port: 80,
        },
        state: TcpState::Established,
        snat: Ipv4Addr::new(10, 1, 0, 100),
        endpoint: Ipv4Addr::new(10, 1, 0, 21),
        snat_port: 17000,
        endpoint_port: 8080,
        idle_ms: 250,
    }
}

/// (nonce, frame, bytes) computed with Python's hmac/hashlib.
fn vectors() -> Vec<(u64, Frame, &'static str)> {
    vec![
        (
            0,
            Frame {
                seq: 0,
                msg: Message::Hello {
                    node: 1,
                    nonce: NONCE,
                },
            },
            "465301010000000c0000000000000000010000000102030405060708\
             210fca5a1ed65df9fb656a9b85de99aa4e865759700b1f503ccf4bbef504d3e7",
        ),
        (
            NONCE,
            Frame {
                seq: 7,
                msg: Message::Upsert(vec![tcp_record()]),
            },
            "46530102000000240000000000000007000100000601000\
             00a0100020a0100649c4000500a0100640a01001542681f90000000fa\
             0f90130fe84e9934c1382577f1f5251c9f936361f2b44fe4b2bb70b10d36ee34",
        ),
        (
            NONCE,
            Frame {
                seq: 8,
                msg: Message::Delete(vec![FlowKey {
                    proto: 17,
                    client: Ipv4Addr::new(10, 1, 0, 2),
                    vip: Ipv4Addr::new(10, 1, 0, 100),
                    client_port: 5353,
                    vip_port: 53,
                }]),
            },
            "4653010300000014000000000000000800010000110000000a0100020a01006414e90035\
             6fcd81a22fc3b7df6586235749b9bf3eb579c55ccb9f128d0fefec1b6bd46e76",
        ),
        (
            NONCE,
            Frame {
                seq: 9,
                msg: Message::ResyncStart { id: 3 },
            },
            "4653010400000004000000000000000900000003\
             aa56371b128d55c29aba6d83649fcacfeb0f67cc0001219463de5f1a58478868",
        ),
        (
            NONCE,
            Frame {
                seq: 10,
                msg: Message::ResyncEnd { id: 3, count: 1 },
            },
            "4653010500000008000000000000000a0000000300000001\
             4e2190e9c6515f1e73bef188159a269b9f711023040318a8077c086e90cdd3e4",
        ),
        (
            NONCE,
            Frame {
                seq: 2,
                msg: Message::ResyncAck { id: 3, count: 1 },
            },
            "46530106000000080000000000000002000000030000000\
             1f5982d1c4a42140a6c463b74ecc80a960f85a7c39ed7aa2ae8ce79f7d2034901",
        ),
    ]
}

#[test]
fn every_kind_encodes_to_its_vector() {
    for (nonce, frame, bytes) in vectors() {
        assert_eq!(
            encode(&key(), nonce, frame.seq, &frame.msg),
            hex(bytes),
            "{frame:?}"
        );
    }
}

#[test]
fn every_vector_decodes_to_its_frame_and_length() {
    for (nonce, frame, bytes) in vectors() {
        let mut b = hex(bytes);
        let len = b.len();
        assert_eq!(frame_len(&b), Ok(len));
        // Bytes of the next frame after it are left alone.
        b.extend_from_slice(&[0x46, 0x53]);
        assert_eq!(decode(&key(), nonce, &b), Ok((frame, len)));
    }
}

/// A frame of `kind` with `body`, MAC'd correctly (for body errors, which
/// are only looked at after the MAC passed).
fn sealed(kind: u8, body: &[u8]) -> Vec<u8> {
    seal(&key(), NONCE, kind, 5, body)
}

fn good_upsert() -> Vec<u8> {
    hex(vectors()[1].2)
}

fn record_body(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut body = good_upsert()[HEADER_LEN..HEADER_LEN + 4 + RECORD_LEN].to_vec();
    edit(&mut body);
    sealed(2, &body)
}

#[test]
fn one_bad_vector_per_error() {
    let k = key();
    let good = good_upsert();
    let cases: Vec<(&str, Vec<u8>, u64, DecodeError)> = vec![
        (
            "header cut short",
            good[..10].to_vec(),
            NONCE,
            DecodeError::Truncated { need: 16, have: 10 },
        ),
        (
            "body cut short",
            good[..40].to_vec(),
            NONCE,
            DecodeError::Truncated {
                need: good.len(),
                have: 40,
            },
        ),
        (
            "magic",
            [&[0x47, 0x53][..], &good[2..]].concat(),
            NONCE,
            DecodeError::BadMagic(0x4753),
        ),
        (
            "version 2",
            [&good[..2], &[2][..], &good[3..]].concat(),
            NONCE,
            DecodeError::BadVersion(2),
        ),
        (
            "kind 9",
            [&good[..3], &[9][..], &good[4..]].concat(),
            NONCE,
            DecodeError::UnknownKind(9),
        ),
        (
            "body length 1 MiB",
            [&good[..4], &(1u32 << 20).to_be_bytes()[..], &good[8..]].concat(),
            NONCE,
            DecodeError::BodyTooLong(1 << 20),
        ),
        (
            "wrong session nonce",
            good.clone(),
            NONCE + 1,
            DecodeError::BadMac,
        ),
        (
            "a flipped body bit",
            {
                let mut b = good.clone();
                b[HEADER_LEN + 9] ^= 1;
                b
            },
            NONCE,
            DecodeError::BadMac,
        ),
        (
            "hello body of 11 bytes",
            sealed(1, &[0; 11]),
            NONCE,
            DecodeError::BadBodyLength { kind: 1, len: 11 },
        ),
        (
            "upsert with zero records",
            sealed(2, &[0, 0, 0, 0]),
            NONCE,
            DecodeError::BadCount(0),
        ),
        (
            "upsert saying 2 records, carrying 1",
            record_body(|b| b[1] = 2),
            NONCE,
            DecodeError::BadBodyLength { kind: 2, len: 36 },
        ),
        (
            "protocol 1 (ICMP)",
            record_body(|b| b[4] = 1),
            NONCE,
            DecodeError::BadProto(1),
        ),
        (
            "TCP state 4",
            record_body(|b| b[5] = 4),
            NONCE,
            DecodeError::BadState(4),
        ),
        (
            "SNAT port 0",
            record_body(|b| {
                b[4 + 24] = 0;
                b[4 + 25] = 0;
            }),
            NONCE,
            DecodeError::ZeroPort("SNAT port"),
        ),
    ];
    for (what, bytes, nonce, want) in cases {
        assert_eq!(decode(&k, nonce, &bytes), Err(want), "{what}");
    }
}

#[test]
fn a_frame_under_another_key_is_refused() {
    let other = SyncKey::new(b"another-key-of-enough-length", "test").unwrap();
    let b = encode(&other, NONCE, 1, &Message::ResyncStart { id: 1 });
    assert_eq!(decode(&key(), NONCE, &b), Err(DecodeError::BadMac));
}

#[test]
fn a_short_key_is_refused_naming_the_file_and_length() {
    let e = SyncKey::new(b"  short\n", "/etc/floatlb/sync.key").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("/etc/floatlb/sync.key") && msg.contains("5 bytes"),
        "{msg}"
    );
}

#[test]
fn a_full_batch_round_trips() {
    let recs: Vec<FlowRecord> = (0..MAX_BATCH as u16)
        .map(|i| FlowRecord {
            snat_port: 1024 + i,
            key: FlowKey {
                client_port: 1 + i,
                proto: 17,
                ..tcp_record().key
            },
            ..tcp_record()
        })
        .collect();
    let b = encode(&key(), NONCE, 3, &Message::Upsert(recs.clone()));
    assert_eq!(b.len(), HEADER_LEN + MAX_BODY + MAC_LEN);
    let (f, used) = decode(&key(), NONCE, &b).unwrap();
    assert_eq!((f.msg, used), (Message::Upsert(recs), b.len()));
}
