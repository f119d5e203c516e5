use std::process::Command;

use auditlake_testkit::{Broker, Error, skip_services, tool};

use crate::accepts;

fn topics(broker: &Broker) -> String {
    let output = Command::new(tool("tansu"))
        .args(["topic", "list", "--broker"])
        .arg(format!("tcp://{}", broker.bootstrap()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn tansu_creates_topics_and_survives_kill() {
    if skip_services("tansu_creates_topics_and_survives_kill") {
        return;
    }
    let mut broker = Broker::start().unwrap();
    let port = broker.port();
    assert_eq!(broker.bootstrap(), format!("127.0.0.1:{port}"));

    broker.create_topic("api_access", 3).unwrap();
    let err = broker.create_topic("api_access", 3).unwrap_err();
    assert!(matches!(err, Error::Command { .. }), "{err}");
    assert!(broker.data_file().is_file());

    broker.kill();
    assert!(!broker.is_running());
    assert!(!accepts(port));
    broker.restart().unwrap();
    assert_eq!(broker.port(), port);
    broker.create_topic("grants", 1).unwrap();
    let listed = topics(&broker);
    assert!(
        listed.contains("\"api_access\"") && listed.contains("\"grants\""),
        "{listed}"
    );
}
