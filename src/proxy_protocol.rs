//! Inbound PROXY protocol (HAProxy's spec, versions 1 and 2), as AWS NLB and other L4 load
//! balancers send it ahead of the TLS ClientHello so that the real client address survives.
//!
//! Parsing is strict: an unknown version or command, a malformed address block, TLVs that do
//! not frame exactly, or a v1 line that is not exactly the spec's grammar are errors and the
//! connection is closed. The reader consumes exactly the header and not a byte more, so the
//! TLS handshake reads the socket directly afterwards (no buffering wrapper on the hot path).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::config::ProxyProtocol;

/// The v2 signature (spec §2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (spec §2.1).
const V1_MAX: usize = 107;
/// Longest v2 body accepted. The format allows 64 KiB of TLVs; balancers send a few dozen
/// bytes (AWS: a VPC endpoint id), so anything near the format's limit is refused rather than
/// buffered.
pub const V2_MAX_BODY: usize = 2048;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header (proxy_protocol is {0})")]
    Missing(&'static str),
    #[error("PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("PROXY v2 header: {0}")]
    V2(&'static str),
    #[error("connection closed inside the PROXY header")]
    Truncated,
}

/// Reads one header. `Ok(Some(addr))` is the original client; `Ok(None)` means the balancer
/// spoke for itself (v2 LOCAL, e.g. a health check, or v1 UNKNOWN) and the TCP peer stands.
pub async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    mode: ProxyProtocol,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mode_name = match mode {
        ProxyProtocol::Off => return Ok(None),
        ProxyProtocol::V2 => "v2",
        ProxyProtocol::Any => "any",
    };
    // Six bytes tell the versions apart ("PROXY " vs the start of the v2 signature) without
    // reading past the shortest possible header (15 bytes, "PROXY UNKNOWN\r\n").
    let mut start = [0u8; 16];
    read_exact(r, &mut start[..6]).await?;
    if &start[..6] == b"PROXY " {
        if mode != ProxyProtocol::Any {
            return Err(ProxyHeaderError::Missing(mode_name));
        }
        let mut line = Vec::with_capacity(V1_MAX);
        line.extend_from_slice(&start[..6]);
        // Byte by byte: the line has no length prefix, and reading further would eat the
        // ClientHello. v1 is legacy; v2 is the efficient path.
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(ProxyHeaderError::V1("longer than 107 bytes"));
            }
            let mut b = [0u8; 1];
            read_exact(r, &mut b).await?;
            line.push(b[0]);
        }
        return parse_v1(&line);
    }
    if start[..6] != V2_SIGNATURE[..6] {
        return Err(ProxyHeaderError::Missing(mode_name));
    }
    read_exact(r, &mut start[6..]).await?;
    let len = v2_body_len(&start)?;
    let mut body = vec![0u8; len];
    read_exact(r, &mut body).await?;
    parse_v2(&start, &body)
}

async fn read_exact<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<(), ProxyHeaderError> {
    r.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| ProxyHeaderError::Truncated)
}

/// Checks the fixed 16 bytes of a v2 header and returns the body length.
pub fn v2_body_len(fixed: &[u8; 16]) -> Result<usize, ProxyHeaderError> {
    if fixed[..12] != V2_SIGNATURE {
        return Err(ProxyHeaderError::V2("bad signature"));
    }
    if fixed[12] >> 4 != 2 {
        return Err(ProxyHeaderError::V2("version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if len > V2_MAX_BODY {
        return Err(ProxyHeaderError::V2(
            "longer than this proxy accepts (2 KiB)",
        ));
    }
    Ok(len)
}

/// Parses a v2 header: the fixed 16 bytes and the body they announce.
pub fn parse_v2(fixed: &[u8; 16], body: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let len = v2_body_len(fixed)?;
    if body.len() != len {
        return Err(ProxyHeaderError::V2(
            "body length differs from the header's",
        ));
    }
    let command = fixed[12] & 0x0F;
    let family = fixed[13] >> 4;
    let transport = fixed[13] & 0x0F;
    let (addr, used) = match (command, family, transport) {
        // LOCAL: the balancer's own connection (health checks), whose address block is
        // ignored; or PROXY with AF_UNSPEC: no address to take.
        (0x0, _, _) | (0x1, 0x0, _) => (None, 0),
        (0x1, 0x1, 0x1) => {
            let b = body
                .get(..12)
                .ok_or(ProxyHeaderError::V2("IPv4 address block too short"))?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[8], b[9]]);
            (Some(SocketAddr::new(IpAddr::V4(ip), port)), 12)
        }
        (0x1, 0x2, 0x1) => {
            let b = body
                .get(..36)
                .ok_or(ProxyHeaderError::V2("IPv6 address block too short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[32], b[33]]);
            (
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port)),
                36,
            )
        }
        (0x1, 0x3, 0x1) => {
            // AF_UNIX: the balancer is local; there is no network address to take.
            if body.len() < 216 {
                return Err(ProxyHeaderError::V2("unix address block too short"));
            }
            (None, 216)
        }
        (0x1, 0x1..=0x3, _) => return Err(ProxyHeaderError::V2("not a stream (TCP) connection")),
        (0x1, _, _) => return Err(ProxyHeaderError::V2("unknown address family")),
        _ => return Err(ProxyHeaderError::V2("unknown command")),
    };
    if command == 0x1 {
        check_tlvs(&body[used..])?;
    }
    Ok(addr)
}

/// TLVs after the address block must frame exactly: type (1), length (2, big-endian), value.
fn check_tlvs(mut rest: &[u8]) -> Result<(), ProxyHeaderError> {
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(ProxyHeaderError::V2("truncated TLV"));
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        rest = rest
            .get(3 + len..)
            .ok_or(ProxyHeaderError::V2("TLV longer than the header"))?;
    }
    Ok(())
}

/// Parses a complete v1 line, CRLF included:
/// `PROXY TCP4|TCP6 <src ip> <dst ip> <src port> <dst port>\r\n` or `PROXY UNKNOWN[ ...]\r\n`.
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let text = line
        .strip_suffix(b"\r\n")
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or(ProxyHeaderError::V1("not a CRLF-terminated ASCII line"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyHeaderError::V1("does not start with PROXY"));
    }
    let proto = parts.next().ok_or(ProxyHeaderError::V1("no protocol"))?;
    if proto == "UNKNOWN" {
        // The rest is to be ignored (spec §2.1).
        return Ok(None);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields.as_slice() else {
        return Err(ProxyHeaderError::V1("expected 4 fields after the protocol"));
    };
    let parse_ip = |s: &str| -> Result<IpAddr, ProxyHeaderError> {
        match proto {
            "TCP4" => s
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ProxyHeaderError::V1("bad IPv4 address")),
            "TCP6" => s
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ProxyHeaderError::V1("bad IPv6 address")),
            _ => Err(ProxyHeaderError::V1(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            )),
        }
    };
    let parse_port = |s: &str| -> Result<u16, ProxyHeaderError> {
        let ok = !s.is_empty()
            && s.len() <= 5
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        ok.then(|| s.parse::<u16>().ok())
            .flatten()
            .ok_or(ProxyHeaderError::V1("bad port"))
    };
    let source = SocketAddr::new(parse_ip(src)?, parse_port(sport)?);
    parse_ip(dst)?;
    parse_port(dport)?;
    Ok(Some(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    async fn read(
        bytes: &[u8],
        mode: ProxyProtocol,
    ) -> (Result<Option<SocketAddr>, ProxyHeaderError>, usize) {
        let mut r = bytes;
        let out = read_header(&mut r, mode).await;
        (out, r.len())
    }

    #[tokio::test]
    async fn v2_ipv4_with_tlvs_consumes_exactly_the_header() {
        let mut body = vec![203, 0, 113, 9, 10, 0, 0, 1, 0xC3, 0x50, 0x01, 0xBB];
        body.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']); // one TLV
        let mut bytes = v2(1, 0x11, &body);
        bytes.extend_from_slice(b"\x16\x03\x01"); // the ClientHello that follows
        let (out, left) = read(&bytes, ProxyProtocol::V2).await;
        assert_eq!(out, Ok(Some("203.0.113.9:50000".parse().unwrap())));
        assert_eq!(left, 3, "the TLS bytes are left unread");
    }

    #[tokio::test]
    async fn v2_ipv6_local_and_errors() {
        let mut body = vec![0u8; 36];
        body[15] = 1;
        body[32..34].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            read(&v2(1, 0x21, &body), ProxyProtocol::V2).await.0,
            Ok(Some("[::1]:443".parse().unwrap()))
        );
        assert_eq!(read(&v2(0, 0x00, &[]), ProxyProtocol::V2).await.0, Ok(None));
        assert!(
            read(&v2(1, 0x11, &[1, 2, 3]), ProxyProtocol::V2)
                .await
                .0
                .is_err()
        );
        assert!(
            read(&v2(1, 0x12, &[0; 12]), ProxyProtocol::V2)
                .await
                .0
                .is_err(),
            "UDP"
        );
        assert!(
            read(&v2(2, 0x11, &[0; 12]), ProxyProtocol::V2)
                .await
                .0
                .is_err(),
            "command"
        );
        let mut bad_tlv = vec![0u8; 12];
        bad_tlv.extend_from_slice(&[0x04, 0x00, 0x09, 1]);
        assert!(
            read(&v2(1, 0x11, &bad_tlv), ProxyProtocol::V2)
                .await
                .0
                .is_err()
        );
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(read(&wrong_version, ProxyProtocol::V2).await.0.is_err());
        assert_eq!(
            read(b"\x16\x03\x01\x02\x00\x01\x00", ProxyProtocol::V2)
                .await
                .0,
            Err(ProxyHeaderError::Missing("v2")),
            "a bare ClientHello"
        );
        assert_eq!(
            read(&V2_SIGNATURE[..9], ProxyProtocol::V2).await.0,
            Err(ProxyHeaderError::Truncated)
        );
    }

    #[tokio::test]
    async fn v1_only_in_any_mode_and_strictly() {
        let line = b"PROXY TCP4 198.51.100.22 10.0.0.1 35646 443\r\n\x16";
        assert_eq!(
            read(line, ProxyProtocol::Any).await,
            (Ok(Some("198.51.100.22:35646".parse().unwrap())), 1)
        );
        assert_eq!(
            read(line, ProxyProtocol::V2).await.0,
            Err(ProxyHeaderError::Missing("v2"))
        );
        assert_eq!(
            read(b"PROXY UNKNOWN\r\n", ProxyProtocol::Any).await.0,
            Ok(None)
        );
        assert_eq!(
            read(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n", ProxyProtocol::Any)
                .await
                .0,
            Ok(Some("[2001:db8::1]:1".parse().unwrap()))
        );
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(
            read(&long, ProxyProtocol::Any).await.0,
            Err(ProxyHeaderError::V1("longer than 107 bytes"))
        );
    }
}
