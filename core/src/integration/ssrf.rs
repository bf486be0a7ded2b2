//! SSRF guard for webhook URLs: decides which IP addresses a webhook may reach.
//!
//! Owns the address policy ([`classify`]), host vetting ([`vet`]) and the ureq resolver that
//! applies both ([`GuardedResolver`]).
//!
//! Invariants:
//! - Unless `allow_private_networks` is set, a host is refused when *any* address it resolves to
//!   is not public unicast; a name resolving to a mix of public and private is treated as hostile.
//! - Addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`,
//!   6to4 `2002::/16`) are judged by the embedded IPv4 address.
//! - The resolver hands ureq exactly the vetted addresses, so the connection goes to an address
//!   that was checked: there is no second lookup and so no DNS-rebinding window.
//!
//! Failure modes: a name that does not resolve gives [`GuardError::Resolve`] (ureq's
//! `HostNotFound`); a refused address gives [`GuardError::Refused`], whose message names the
//! range and the setting that allows it. The lookup blocks; the ureq timeout is not honoured.
//!
//! The agent using [`GuardedResolver`] must have no proxy (`Config::builder().proxy(None)`):
//! with an HTTP proxy ureq resolves only the proxy's name and the proxy reaches the target unvetted.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// Most addresses kept from one lookup (ureq's `ResolvedSocketAddrs` capacity).
const MAX_ADDRS: usize = 16;

/// Why an address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Loopback,
    Private,
    LinkLocal,
    Cgnat,
    UniqueLocal,
    Unspecified,
    Multicast,
    Broadcast,
    Reserved,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Loopback => "loopback",
            Refusal::Private => "private (RFC 1918)",
            Refusal::LinkLocal => "link-local",
            Refusal::Cgnat => "CGNAT (100.64.0.0/10)",
            Refusal::UniqueLocal => "unique-local (fc00::/7)",
            Refusal::Unspecified => "unspecified",
            Refusal::Multicast => "multicast",
            Refusal::Broadcast => "broadcast",
            Refusal::Reserved => "reserved (special-purpose)",
        })
    }
}

/// The refusal for `ip`, if it is not a public unicast address (IPv4-mapped etc. classified by the embedded v4).
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Refusal> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_unspecified() => Some(Refusal::Unspecified),
        _ if ip.is_broadcast() => Some(Refusal::Broadcast),
        (0, ..) => Some(Refusal::Reserved), // 0.0.0.0/8, "this network"
        (127, ..) => Some(Refusal::Loopback),
        (10, ..) | (192, 168, _) => Some(Refusal::Private),
        (172, 16..=31, _) => Some(Refusal::Private),
        (169, 254, _) => Some(Refusal::LinkLocal),
        (100, 64..=127, _) => Some(Refusal::Cgnat),
        (224..=239, ..) => Some(Refusal::Multicast),
        (240..=255, ..) => Some(Refusal::Reserved), // 240.0.0.0/4, reserved for future use
        (198, 18..=19, _) => Some(Refusal::Reserved), // 198.18.0.0/15, benchmarking (RFC 2544)
        // IETF protocol assignments and the three documentation nets (RFC 5737).
        (192, 0, 0) | (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Some(Refusal::Reserved),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    let s = ip.segments();
    if let Some(v4) = embedded_v4(&ip) {
        return classify_v4(v4);
    }
    match s {
        _ if ip.is_unspecified() => Some(Refusal::Unspecified),
        _ if ip.is_loopback() => Some(Refusal::Loopback),
        [0xfe80..=0xfebf, ..] => Some(Refusal::LinkLocal), // fe80::/10
        [0xfc00..=0xfdff, ..] => Some(Refusal::UniqueLocal), // fc00::/7
        [0xff00..=0xffff, ..] => Some(Refusal::Multicast), // ff00::/8
        // fec0::/10 deprecated site-local; the rest of ::/8, e.g. local NAT64 64:ff9b:1::/48.
        [0xfec0..=0xfeff, ..] | [0x0000..=0x00ff, ..] => Some(Refusal::Reserved),
        [0x0100, 0, 0, 0, ..] => Some(Refusal::Reserved), // 100::/64, discard-only
        [0x2001, 0x0db8, ..] => Some(Refusal::Reserved),  // 2001:db8::/32, documentation
        [0x2001, 0x0000, ..] => Some(Refusal::Reserved),  // Teredo: real client address obfuscated
        _ => None,
    }
}

/// The IPv4 address carried inside `ip`, for forms that route to (or through) that v4 address.
fn embedded_v4(ip: &Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(v4(hi, lo)), // ::ffff:a.b.c.d, mapped
        [0x0064, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)), // 64:ff9b::/96, NAT64
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),            // 2002::/16, 6to4
        // ::a.b.c.d, deprecated IPv4-compatible; :: and ::1 are not v4 addresses.
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) > (0, 1) => Some(v4(hi, lo)),
        _ => None,
    }
}

/// Error of vetting a URL's host.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot resolve `{host}`: {reason}")]
    Resolve { host: String, reason: String },
    #[error(
        "`{host}` resolves to {addr}, a {refusal} address; set webhooks.allow_private_networks = true to allow it"
    )]
    Refused { host: String, addr: IpAddr, refusal: Refusal },
}

/// Resolves host:port (an IP literal, bracketed IPv6 included, needs no DNS) and vets every address.
///
/// If any address is refused and `allow_private` is false, the whole host is refused.
/// Returns at most 16 addresses in resolver order; `allow_private = true` returns them unvetted.
pub fn vet(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, GuardError> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let resolve_error = |reason: String| GuardError::Resolve { host: host.to_owned(), reason };
    let addrs: Vec<SocketAddr> = (bare, port).to_socket_addrs().map_err(|e| resolve_error(e.to_string()))?.collect();
    if addrs.is_empty() {
        return Err(resolve_error("no addresses".to_owned()));
    }
    let first_refused = addrs.iter().find_map(|a| Some((a.ip(), classify(a.ip())?)));
    if let (false, Some((addr, refusal))) = (allow_private, first_refused) {
        return Err(GuardError::Refused { host: host.to_owned(), addr, refusal });
    }
    Ok(addrs.into_iter().take(MAX_ADDRS).collect())
}

/// A ureq 3 name resolver that vets (the connection then goes to exactly the vetted address).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolver for GuardedResolver {
    fn resolve(&self, uri: &Uri, config: &Config, _timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (host, port) = host_and_port(uri)?;
        let addrs = vet(host.as_str(), port, self.allow_private).map_err(|e| match e {
            GuardError::Resolve { .. } => ureq::Error::HostNotFound,
            refused @ GuardError::Refused { .. } => ureq::Error::Other(Box::new(refused)),
        })?;
        let mut out = self.empty();
        // vet returns at most MAX_ADDRS, the capacity, so try_push cannot fail.
        for addr in config.ip_family().keep_wanted(addrs.into_iter()) {
            out.try_push(addr).map_err(|_| ureq::Error::HostNotFound)?;
        }
        if out.is_empty() {
            Err(ureq::Error::HostNotFound)
        } else {
            Ok(out)
        }
    }
}

/// Host (brackets kept for IPv6) and port of `uri`, with the scheme's default port.
fn host_and_port(uri: &Uri) -> Result<(String, u16), ureq::Error> {
    let bad = || ureq::Error::BadUri(format!("{uri} needs a scheme, a host and a known port"));
    let (scheme, authority) = uri.scheme().zip(uri.authority()).ok_or_else(bad)?;
    let joined = DefaultResolver::host_and_port(scheme, authority).ok_or_else(bad)?;
    let (host, port) = joined.rsplit_once(':').ok_or_else(bad)?;
    Ok((host.to_owned(), port.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Refusal::*;

    // Every refused range maps to its refusal, and public addresses (incl. near-misses) pass.
    #[test]
    fn classify_table() {
        let rows: &[(&str, Option<Refusal>)] = &[
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.254", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("169.254.169.254", Some(LinkLocal)),
            ("100.64.0.1", Some(Cgnat)),
            ("100.127.255.254", Some(Cgnat)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("224.0.0.1", Some(Multicast)),
            ("198.18.0.1", Some(Reserved)),
            ("240.0.0.1", Some(Reserved)),
            ("::1", Some(Loopback)),
            ("::", Some(Unspecified)),
            ("fe80::1", Some(LinkLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12::1", Some(UniqueLocal)),
            ("ff02::1", Some(Multicast)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::a00:1", Some(Private)),
            ("2002:a00:1::1", Some(Private)),
            ("2001:db8::1", Some(Reserved)),
        ];
        for (text, want) in rows {
            let ip: IpAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(classify(ip), *want, "{text}");
        }
        let public = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "192.169.0.1", "2606:4700::1111"];
        for text in public.into_iter().chain(["::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]) {
            let ip: IpAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(classify(ip), None, "{text}");
        }
    }

    // An IPv4 loopback literal is refused by default and allowed with allow_private.
    #[test]
    fn vet_loopback_literal() {
        let err = vet("127.0.0.1", 80, false).unwrap_err();
        assert!(matches!(err, GuardError::Refused { refusal: Loopback, .. }), "{err}");
        assert!(err.to_string().contains("a loopback address"), "{err}");
        assert_eq!(vet("127.0.0.1", 80, true).unwrap(), vec!["127.0.0.1:80".parse::<std::net::SocketAddr>().unwrap()]);
    }

    // A bracketed IPv6 literal is unbracketed and refused; localhost resolves (hosts file) to loopback.
    #[test]
    fn vet_bracketed_v6_and_localhost() {
        assert!(matches!(vet("[::1]", 80, false), Err(GuardError::Refused { refusal: Loopback, .. })));
        assert!(matches!(vet("localhost", 80, false), Err(GuardError::Refused { refusal: Loopback, .. })));
    }

    // The ureq resolver refuses a loopback URL with a message naming why, and returns it when allowed.
    #[test]
    fn resolver_refuses_then_allows() {
        let uri: Uri = "http://127.0.0.1:9/".parse().unwrap();
        let config = Config::default();
        let guarded = GuardedResolver { allow_private: false };
        let err = guarded.resolve(&uri, &config, NextTimeout::default()).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        let open = GuardedResolver { allow_private: true };
        let addrs = open.resolve(&uri, &config, NextTimeout::default()).unwrap();
        assert_eq!(&addrs[..], &["127.0.0.1:9".parse::<SocketAddr>().unwrap()]);
    }

    // Through a real agent the refusal surfaces in the request error (what last_error records).
    #[test]
    fn agent_request_error_names_refusal() {
        let config = Config::builder().proxy(None).build();
        let connector = ureq::unversioned::transport::DefaultConnector::new();
        let agent = ureq::Agent::with_parts(config, connector, GuardedResolver { allow_private: false });
        let err = agent.get("http://[::1]:9/").call().unwrap_err();
        assert!(err.to_string().contains("a loopback address"), "{err}");
    }
}
