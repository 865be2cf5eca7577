//! Host network configuration over rtnetlink (no shell-outs): finding an
//! interface by MAC, bringing it up, adding and removing VIPs, and the
//! source-routing rule that sends replies from a VIP out of its own ENI.
//!
//! Every operation is idempotent: adding what exists and removing what is
//! gone both succeed, so a re-run after a crash converges.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use futures::TryStreamExt;
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags},
    link::LinkAttribute,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::{CloudError, Recorder, report::CallOutcome};

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EADDRNOTAVAIL: i32 = 99;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn nl_err(op: impl Into<String>, e: impl std::fmt::Display) -> CloudError {
    CloudError::Netlink {
        op: op.into(),
        message: e.to_string(),
    }
}

/// A netlink handle (its connection task runs on the current runtime).
pub async fn connect() -> Result<Handle, CloudError> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| nl_err("open netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(mac: &str) -> Result<[u8; 6], CloudError> {
    let parts: Vec<&str> = mac.split(':').collect();
    let bad = || CloudError::invalid("mac", mac, "expected six hex bytes separated by ':'");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// An interface: index, name and MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
}

pub async fn links(handle: &Handle) -> Result<Vec<Link>, CloudError> {
    let mut stream = handle.link().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| nl_err("list links", e))?
    {
        let mut name = String::new();
        let mut mac = None;
        for a in &msg.attributes {
            match a {
                LinkAttribute::IfName(n) => name = n.clone(),
                LinkAttribute::Address(m) if m.len() == 6 => {
                    let mut b = [0u8; 6];
                    b.copy_from_slice(m);
                    mac = Some(b);
                }
                _ => {}
            }
        }
        out.push(Link {
            index: msg.header.index,
            name,
            mac,
        });
    }
    Ok(out)
}

pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Link, CloudError> {
    links(handle)
        .await?
        .into_iter()
        .find(|l| l.name == name)
        .ok_or_else(|| CloudError::invalid("interface", name, "no such network interface"))
}

/// Waits (bounded) for the interface whose MAC is `mac` to appear.
pub async fn wait_link_by_mac(
    handle: &Handle,
    rec: &Recorder,
    mac: [u8; 6],
    timeout: Duration,
) -> Result<Link, CloudError> {
    let start = Instant::now();
    loop {
        if let Some(l) = links(handle)
            .await?
            .into_iter()
            .find(|l| l.mac == Some(mac))
        {
            rec.record_span(
                "os:WaitInterface",
                &l.name,
                false,
                1,
                start,
                CallOutcome::Ok,
            );
            return Ok(l);
        }
        if start.elapsed() >= timeout {
            rec.record_span(
                "os:WaitInterface",
                fmt_mac(&mac),
                false,
                1,
                start,
                CallOutcome::Failed("timeout".into()),
            );
            return Err(CloudError::Timeout {
                what: format!("network interface with MAC {}", fmt_mac(&mac)),
                state: "present".into(),
                waited: start.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub async fn set_up(handle: &Handle, rec: &Recorder, link: &Link) -> Result<(), CloudError> {
    let start = Instant::now();
    let r = handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).up().build())
        .execute()
        .await;
    finish(
        rec,
        "netlink:SetLinkUp",
        &link.name,
        start,
        r.map_err(|e| nl_err("set link up", e)),
    )
}

fn finish(
    rec: &Recorder,
    call: &str,
    target: &str,
    start: Instant,
    r: Result<(), CloudError>,
) -> Result<(), CloudError> {
    let outcome = match &r {
        Ok(()) => CallOutcome::Ok,
        Err(e) => CallOutcome::Failed(e.to_string()),
    };
    rec.record_span(call, target, true, 1, start, outcome);
    r
}

/// Adds `ip/prefix` to `link` (present already = success).
pub async fn add_address(
    handle: &Handle,
    rec: &Recorder,
    link: &Link,
    ip: IpAddr,
    prefix: u8,
) -> Result<(), CloudError> {
    let start = Instant::now();
    let mut req = handle.address().add(link.index, ip, prefix);
    if ip.is_ipv6() {
        // A VIP moving between hosts must be usable at once: no DAD.
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    let r = match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(nl_err(format!("add {ip}/{prefix} to {}", link.name), e)),
    };
    finish(
        rec,
        "netlink:AddAddress",
        &format!("{ip}/{prefix} dev {}", link.name),
        start,
        r,
    )
}

/// The addresses on `link`.
pub async fn addresses(handle: &Handle, link: &Link) -> Result<Vec<IpAddr>, CloudError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| nl_err("list addresses", e))?
    {
        for a in &msg.attributes {
            if let AddressAttribute::Local(ip) | AddressAttribute::Address(ip) = a
                && !out.contains(ip)
            {
                out.push(*ip);
            }
        }
    }
    Ok(out)
}

/// Removes `ip` from `link` (absent = success).
pub async fn del_address(
    handle: &Handle,
    rec: &Recorder,
    link: &Link,
    ip: IpAddr,
) -> Result<(), CloudError> {
    let start = Instant::now();
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .set_address_filter(ip)
        .execute();
    let mut r = Ok(());
    loop {
        match stream.try_next().await {
            Ok(Some(msg)) => match handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(e) if matches!(errno(&e), Some(EADDRNOTAVAIL | ENOENT)) => {}
                Err(e) => {
                    r = Err(nl_err(format!("remove {ip} from {}", link.name), e));
                    break;
                }
            },
            Ok(None) => break,
            Err(e) => {
                r = Err(nl_err("list addresses", e));
                break;
            }
        }
    }
    finish(
        rec,
        "netlink:DelAddress",
        &format!("{ip} dev {}", link.name),
        start,
        r,
    )
}

/// Policy routing for a secondary ENI: table `table` holds a default route
/// via `gateway` out of `link`, and a rule sends traffic sourced from `vip`
/// to that table, so replies leave by the interface the VIP lives on.
pub async fn source_route(
    handle: &Handle,
    rec: &Recorder,
    link: &Link,
    vip: Ipv4Addr,
    gateway: Ipv4Addr,
    table: u32,
) -> Result<(), CloudError> {
    let start = Instant::now();
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(link.index)
        .table_id(table)
        .build();
    let r = match handle.route().add(route).replace().execute().await {
        Ok(()) => Ok(()),
        Err(e) => Err(nl_err(
            format!("default via {gateway} dev {} table {table}", link.name),
            e,
        )),
    };
    finish(
        rec,
        "netlink:AddRoute",
        &format!("default via {gateway} table {table}"),
        start,
        r,
    )?;
    let start = Instant::now();
    let r = match handle
        .rule()
        .add()
        .v4()
        .source_prefix(vip, 32)
        .table_id(table)
        .priority(table)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(EEXIST | ESRCH)) => Ok(()),
        Err(e) => Err(nl_err(format!("rule from {vip} lookup {table}"), e)),
    };
    finish(
        rec,
        "netlink:AddRule",
        &format!("from {vip} lookup {table}"),
        start,
        r,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_roundtrip_and_errors() {
        let m = parse_mac("02:1a:ff:00:0b:c3").unwrap();
        assert_eq!(m, [0x02, 0x1a, 0xff, 0x00, 0x0b, 0xc3]);
        assert_eq!(fmt_mac(&m), "02:1a:ff:00:0b:c3");
        assert!(parse_mac("02:1a:ff:00:0b").is_err());
        assert!(parse_mac("02:1a:ff:00:0b:zz").is_err());
    }
}
