use auditlake_testkit::{MOTO_AUTH, S3Server, http_request, skip_services};

use crate::accepts;

#[test]
fn s3s_fs_serves_the_bucket_and_restarts_on_the_same_port() {
    if skip_services("s3s_fs_serves_the_bucket_and_restarts_on_the_same_port") {
        return;
    }
    let mut s3 = S3Server::start().unwrap();
    let port = s3.port();
    let bucket_dir = s3.root().unwrap().join(s3.bucket());
    assert!(bucket_dir.is_dir());
    assert_eq!(s3.endpoint(), format!("http://127.0.0.1:{port}"));
    assert_eq!(s3.lake_url("lake"), "s3://auditlake/lake");
    let env = s3.storage_options();
    assert_eq!(env["AWS_ENDPOINT_URL"], s3.endpoint());
    assert_eq!(env["AWS_ALLOW_HTTP"], "true");
    assert_eq!(env["AWS_REGION"], "us-east-1");

    // It speaks S3: an unsigned request is refused by SigV4, not dropped.
    let response = http_request(port, "GET", "/auditlake/", &[], b"").unwrap();
    assert_eq!(
        response.status,
        403,
        "{}",
        String::from_utf8_lossy(&response.body)
    );

    std::fs::write(bucket_dir.join("kept.txt"), b"kept").unwrap();
    s3.stop();
    assert!(!s3.is_running());
    assert!(!accepts(port));
    s3.restart().unwrap();
    assert!(s3.is_running());
    assert!(accepts(port));
    assert_eq!(s3.port(), port);
    assert_eq!(std::fs::read(bucket_dir.join("kept.txt")).unwrap(), b"kept");

    let root = s3.root().unwrap();
    drop(s3);
    assert!(!accepts(port));
    assert!(!root.exists(), "temp dir removed on drop");
}

#[test]
fn moto_round_trips_an_object() {
    if skip_services("moto_round_trips_an_object") {
        return;
    }
    let mut s3 = S3Server::start_moto().unwrap();
    let port = s3.port();
    assert!(s3.root().is_none());

    // moto checks no signatures: plain HTTP is a real round trip.
    let put = http_request(port, "PUT", "/auditlake/a/b.txt", &[MOTO_AUTH], b"hello").unwrap();
    assert_eq!(put.status, 200);
    let get = http_request(port, "GET", "/auditlake/a/b.txt", &[MOTO_AUTH], b"").unwrap();
    assert_eq!((get.status, get.body.as_slice()), (200, &b"hello"[..]));

    // Restart: same port, empty store, bucket created again.
    s3.restart().unwrap();
    assert_eq!(s3.port(), port);
    let get = http_request(port, "GET", "/auditlake/a/b.txt", &[MOTO_AUTH], b"").unwrap();
    assert_eq!(get.status, 404);
    let list = http_request(port, "GET", "/auditlake", &[MOTO_AUTH], b"").unwrap();
    assert_eq!(list.status, 200);
}
