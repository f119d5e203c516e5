//! A minimal, unsigned HTTP/1.1 client over `std::net`, enough to create a
//! bucket on moto and to probe a server. Not for real S3 traffic: s3s-fs
//! checks SigV4 and answers 403 to these requests.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::{Error, IoContext, Result};

/// Read and write timeout of one request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Status and body of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A header that makes moto treat a request as its default account's instead
/// of anonymous (anonymous requests may write but not read). moto does not
/// check the signature.
pub const MOTO_AUTH: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=auditlake-test/20240101/us-east-1/s3/aws4_request, \
     SignedHeaders=host, Signature=0",
);

/// Sends `METHOD path` with `headers` and `body` to 127.0.0.1:`port` and reads
/// the whole response (`Connection: close`; chunked bodies are returned
/// undecoded).
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let what = || format!("{method} http://{addr}{path}");
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).context(what)?;
    stream.set_read_timeout(Some(TIMEOUT)).context(what)?;
    stream.set_write_timeout(Some(TIMEOUT)).context(what)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    stream.write_all(head.as_bytes()).context(what)?;
    stream.write_all(body).context(what)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).context(what)?;

    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(at) => (&raw[..at], raw[at + 4..].to_vec()),
        None => (&raw[..], Vec::new()),
    };
    let status = String::from_utf8_lossy(head)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::Io {
            context: what(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {:?}", String::from_utf8_lossy(head)),
            ),
        })?;
    Ok(HttpResponse { status, body })
}
