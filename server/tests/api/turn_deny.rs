//! The deployed coturn configuration (deploy/coturn/turnserver.conf) against a malicious
//! TURN user: a real coturn, spoken to in raw STUN/TURN (RFC 8489, RFC 8656) by a small
//! client of the test's own, so that every request is exactly the attack.
//!
//! - A relay permission toward each internal, reserved or special address, IPv4 and IPv6
//!   (the `0.0.0.0`, `[::]` and `[::1]` bypasses of CVE-2020-26262 included), is refused
//!   with 403, while one toward a public address is granted (the refusals are the
//!   deny-list's, not some other failure). No packet is sent to any of them: a permission
//!   only installs a filter in coturn.
//! - Allocations per credential are capped (`user-quota`).
//! - Credentials expire: one whose time has passed is refused.

use crate::turn::Coturn;
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use alcove::stun::{
    ALLOCATE, COOKIE, CREATE_PERMISSION, ERROR, Msg, NONCE, REALM, REQUESTED_ADDRESS_FAMILY,
    REQUESTED_TRANSPORT, SUCCESS, USERNAME, XOR_PEER_ADDRESS, XOR_RELAYED_ADDRESS, long_term_key,
};

/// An XOR-PEER-ADDRESS (or other XOR address) value.
fn xor_address(addr: SocketAddr, tid: &[u8; 12]) -> Vec<u8> {
    let mut v = vec![0u8];
    let port = addr.port() ^ (COOKIE >> 16) as u16;
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.push(0x01);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&(u32::from(ip) ^ COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            v.push(0x02);
            v.extend_from_slice(&port.to_be_bytes());
            let mut mask = COOKIE.to_be_bytes().to_vec();
            mask.extend_from_slice(tid);
            v.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    v
}

/// A TURN client with one allocation (or none yet) on its own UDP socket.
struct TurnClient {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: Vec<u8>,
}

impl TurnClient {
    fn new(port: u16, username: String) -> TurnClient {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        TurnClient {
            sock,
            server: SocketAddr::from(([127, 0, 0, 1], port)),
            username,
            realm: Vec::new(),
            nonce: Vec::new(),
            key: Vec::new(),
        }
    }

    fn exchange(&self, m: &Msg, key: Option<&[u8]>) -> Msg {
        let bytes = m.encode(key);
        for _ in 0..3 {
            self.sock.send_to(&bytes, self.server).unwrap();
            let mut buf = [0u8; 1500];
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let r = Msg::decode(&buf[..n]).expect("a STUN message");
                    if r.tid == m.tid {
                        return r;
                    }
                }
                Err(_) => continue,
            }
        }
        panic!("no answer from coturn to a request of type {:#06x}", m.kind);
    }

    /// Allocate a relay (IPv6 when asked): the response, after the 401 round that gives
    /// the realm and nonce.
    fn allocate(&mut self, password: &str, ipv6: bool) -> Msg {
        let transport = vec![17u8, 0, 0, 0];
        let family = |m: Msg| {
            if ipv6 {
                m.attr(REQUESTED_ADDRESS_FAMILY, vec![0x02, 0, 0, 0])
            } else {
                m
            }
        };
        let first = self.exchange(
            &family(Msg::request(ALLOCATE).attr(REQUESTED_TRANSPORT, transport.clone())),
            None,
        );
        assert_eq!(first.kind, ALLOCATE | ERROR);
        assert_eq!(first.error(), Some(401), "no anonymous allocations");
        self.realm = first.get(REALM).expect("a realm").to_vec();
        self.nonce = first.get(NONCE).expect("a nonce").to_vec();
        self.key = long_term_key(&self.username, &self.realm, password);
        let m = family(
            Msg::request(ALLOCATE)
                .attr(REQUESTED_TRANSPORT, transport)
                .attr(USERNAME, self.username.as_bytes())
                .attr(REALM, self.realm.clone())
                .attr(NONCE, self.nonce.clone()),
        );
        self.exchange(&m, Some(&self.key.clone()))
    }

    /// Ask for a permission toward `peer`: `None` when granted, else the error code.
    fn permit(&self, peer: IpAddr) -> Option<u16> {
        let mut m = Msg::request(CREATE_PERMISSION);
        let v = xor_address(SocketAddr::new(peer, 9), &m.tid);
        m = m
            .attr(XOR_PEER_ADDRESS, v)
            .attr(USERNAME, self.username.as_bytes())
            .attr(REALM, self.realm.clone())
            .attr(NONCE, self.nonce.clone());
        let r = self.exchange(&m, Some(&self.key));
        if r.kind == CREATE_PERMISSION | SUCCESS {
            None
        } else {
            assert_eq!(r.kind, CREATE_PERMISSION | ERROR);
            Some(r.error().expect("an error code"))
        }
    }
}

/// A TURN REST API credential (the one Alcove mints) valid for `ttl` seconds (negative:
/// expired).
fn credential(secret: &str, ttl: i64, who: &str) -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let username = format!("{}:{who}", now + ttl);
    let password = alcove::signal::turn_credential(secret, &username);
    (username, password)
}

/// Addresses a TURN user must never reach through the relay.
const DENIED_V4: &[&str] = &[
    "0.0.0.0",         // "this host" on Linux: the CVE-2020-26262 bypass
    "0.1.2.3",         // this network
    "10.0.0.1",        // private
    "10.255.255.254",  // private
    "100.64.0.1",      // carrier-grade NAT
    "100.127.255.254", // carrier-grade NAT
    "127.0.0.1",       // loopback
    "127.1.2.3",       // loopback
    "169.254.169.254", // link-local: cloud metadata
    "172.16.0.1",      // private
    "172.31.255.254",  // private
    "192.0.0.8",       // IETF protocol assignments
    "192.0.2.1",       // documentation
    "192.88.99.1",     // 6to4 relay anycast
    "192.168.0.1",     // private
    "192.168.255.254", // private
    "198.18.0.1",      // benchmarking
    "198.51.100.1",    // documentation
    "203.0.113.1",     // documentation
    "224.0.0.1",       // multicast
    "239.255.255.250", // multicast (SSDP)
    "240.0.0.1",       // reserved
    "255.255.255.255", // broadcast
];

const DENIED_V6: &[&str] = &[
    "::",                     // unspecified: the [::] bypass
    "::1",                    // loopback: the [::1] bypass
    "::ffff:127.0.0.1",       // IPv4-mapped loopback
    "::ffff:10.0.0.1",        // IPv4-mapped private
    "::ffff:169.254.169.254", // IPv4-mapped metadata
    "64:ff9b::a00:1",         // NAT64 of 10.0.0.1
    "64:ff9b:1::1",           // local-use NAT64
    "100::1",                 // discard-only
    "2001::1",                // Teredo
    "2001:db8::1",            // documentation
    "2002:a00:1::1",          // 6to4 of 10.0.0.1
    "fc00::1",                // unique local
    "fd12:3456::1",           // unique local
    "fe80::1",                // link-local
    "fec0::1",                // site-local
    "ff02::1",                // multicast, all nodes
    "ff05::1:3",              // multicast, site
];

#[test]
fn the_deployed_turn_relay_refuses_every_internal_and_reserved_peer_address() {
    let turn = Coturn::start_as_deployed_dual_stack();

    // IPv4 relay: each denied address is refused with 403; a public one is granted.
    let (user, pass) = credential(&turn.secret, 3600, "v4");
    let mut c = TurnClient::new(turn.port, user);
    let r = c.allocate(&pass, false);
    assert_eq!(
        r.kind,
        ALLOCATE | SUCCESS,
        "allocation (error {:?}): {}",
        r.error(),
        turn.log()
    );
    assert!(r.get(XOR_RELAYED_ADDRESS).is_some());
    let mut wrong = Vec::new();
    for a in DENIED_V4 {
        let got = c.permit(a.parse().unwrap());
        if got != Some(403) {
            wrong.push(format!("{a}: {got:?}"));
        }
    }
    assert_eq!(
        c.permit("203.0.114.7".parse().unwrap()),
        None,
        "a public IPv4 peer is allowed (the deny-list is not a deny-all)"
    );

    // IPv6 relay: the same.
    let (user, pass) = credential(&turn.secret, 3600, "v6");
    let mut c6 = TurnClient::new(turn.port, user);
    let r = c6.allocate(&pass, true);
    assert_eq!(
        r.kind,
        ALLOCATE | SUCCESS,
        "IPv6 allocation (error {:?}): {}",
        r.error(),
        turn.log()
    );
    for a in DENIED_V6 {
        let got = c6.permit(a.parse().unwrap());
        if got != Some(403) {
            wrong.push(format!("{a}: {got:?}"));
        }
    }
    assert_eq!(
        c6.permit("2606:4700:4700::1111".parse().unwrap()),
        None,
        "a public IPv6 peer is allowed"
    );
    assert!(
        wrong.is_empty(),
        "permissions not refused with 403: {wrong:#?}"
    );
}

#[test]
fn turn_allocations_are_capped_per_credential_and_credentials_expire() {
    let turn = Coturn::start_as_deployed();
    let conf = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/coturn/turnserver.conf"
    ))
    .unwrap();
    let quota: usize = conf
        .lines()
        .find_map(|l| l.strip_prefix("user-quota="))
        .expect("user-quota is set")
        .trim()
        .parse()
        .unwrap();
    assert!(quota <= 16, "a handful of allocations per credential");

    // `quota` allocations with one credential, each from its own socket; one more is
    // refused (486 Allocation Quota Reached).
    let (user, pass) = credential(&turn.secret, 3600, "quota");
    let mut held = Vec::new();
    for i in 0..quota {
        let mut c = TurnClient::new(turn.port, user.clone());
        let r = c.allocate(&pass, false);
        assert_eq!(
            r.kind,
            ALLOCATE | SUCCESS,
            "allocation {i}: {:?}",
            r.error()
        );
        held.push(c);
    }
    let mut over = TurnClient::new(turn.port, user);
    let r = over.allocate(&pass, false);
    assert_eq!(r.kind, ALLOCATE | ERROR);
    assert_eq!(r.error(), Some(486), "over the quota");
    // Another credential is not affected.
    let (user, pass) = credential(&turn.secret, 3600, "other");
    let mut other = TurnClient::new(turn.port, user);
    assert_eq!(other.allocate(&pass, false).kind, ALLOCATE | SUCCESS);

    // An expired credential (its time a minute gone) is refused.
    let (user, pass) = credential(&turn.secret, -60, "late");
    let mut late = TurnClient::new(turn.port, user);
    let r = late.allocate(&pass, false);
    assert_eq!(r.kind, ALLOCATE | ERROR);
    assert_eq!(r.error(), Some(401), "an expired credential");
    // And one signed with another secret.
    let (user, _) = credential(&turn.secret, 3600, "forged");
    let forged = alcove::signal::turn_credential("not the secret", &user);
    let mut f = TurnClient::new(turn.port, user);
    let r = f.allocate(&forged, false);
    assert_eq!(r.error(), Some(401), "a forged credential");

    // What Alcove mints lives for hours, not days: the default TTL.
    let ttl = alcove::config::Config::default().turn_ttl;
    assert!(
        ttl <= Duration::from_secs(6 * 3600),
        "TURN credentials live {ttl:?}"
    );
}
