use auditlake_testkit::{Error, free_port, try_tool};

#[test]
fn missing_tool_names_the_installer() {
    let err = try_tool("auditlake-no-such-tool").unwrap_err();
    assert!(matches!(err, Error::ToolMissing { .. }));
    assert!(err.to_string().contains(".ci/run"), "{err}");
}

#[test]
fn tool_falls_back_to_path() {
    // `sh` is on PATH on every machine these tests run on.
    assert!(try_tool("sh").unwrap().ends_with("sh"));
}

#[test]
fn free_port_is_bindable() {
    let port = free_port();
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}
