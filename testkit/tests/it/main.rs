//! The harness against the real tools. A missing tool fails these tests;
//! `AUDITLAKE_SKIP_SERVICES=1` skips them.

mod kafka;
mod s3;
mod tools;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}
