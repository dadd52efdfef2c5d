//! The master record on a real authoritative DNS server: a Knot of the test's own on loopback,
//! changed by RFC 2136 updates signed with a TSIG key the test made.

use serde_json::json;
use shared::Status;
use testbed::services::Knot;

use crate::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_master_record_moves_by_rfc2136_compare_and_swap_and_a_newer_one_wins() {
    let knot = Knot::start("shop.test").unwrap();
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (a, b) = app.mariadb_pair().await.unwrap();
    app.client
        .post(
            "/v1/secrets",
            &json!({"name": "shop-tsig", "value": knot.key}),
        )
        .await
        .unwrap();

    // Incomplete or bad settings are refused, naming the field.
    for (dns, field) in [
        (
            json!({"provider": "rfc2136", "server": knot.addr.to_string()}),
            "dns.zone",
        ),
        (json!({"provider": "bind"}), "dns.provider"),
        (json!({"server": "ns1.shop.test"}), "dns.server"),
        (json!({"key_ref": "nope"}), "dns.key_ref"),
        (json!({"ttl": 0}), "dns.ttl"),
    ] {
        let err = app
            .client
            .patch("/v1/clusters/shop", &json!({ "dns": dns }))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, client::ClientError::Api { status: 400, field: Some(f), .. } if f == field),
            "{dns}: {err:?}"
        );
    }
    let c = app
        .client
        .patch(
            "/v1/clusters/shop",
            &json!({"dns": {"provider": "rfc2136", "zone": "shop.test", "server": knot.addr.to_string(),
                            "key_name": knot.key_name, "key_ref": "shop-tsig", "name": "db", "ttl": 1}}),
        )
        .await
        .unwrap();
    assert_eq!(c["dns"]["provider"], "rfc2136", "{c}");
    assert!(
        c["dns"]["address"].is_null(),
        "a new provider starts unpublished: {c}"
    );
    assert!(!c.to_string().contains(&knot.key), "the key leaked: {c}");

    // The master takes the name over (nothing there yet), then a switchover swaps it.
    let (m, log) = app
        .act("dba", "db_configure_master", json!({"cluster": "shop"}))
        .await
        .unwrap();
    assert_eq!(m.status, Status::Succeeded, "{log}");
    assert!(log.contains("(RFC 2136 update accepted by"), "{log}");
    assert!(!log.contains("Warning: the master record's TTL"), "{log}");
    assert_eq!(knot.address("db"), a.address.to_string());
    let (p, log) = app.act("dbb", "db_promote", json!({})).await.unwrap();
    assert_eq!(p.status, Status::Succeeded, "{log}");
    assert!(
        log.contains(&format!(
            "OK. Result: db set to this instance IP: {}",
            b.address
        )),
        "{log}"
    );
    assert_eq!(knot.address("db"), b.address.to_string());

    // Someone else moves the record: the next change does not overwrite it, and says so.
    knot.set("db", "127.0.0.99").unwrap();
    let (p, log) = app.act("dba", "db_promote", json!({})).await.unwrap();
    assert_eq!(p.status, Status::Succeeded, "{log}");
    assert!(
        log.contains(&format!(
            "no longer points at {} (it points at 127.0.0.99): a newer change won; not overwritten",
            b.address
        )),
        "{log}"
    );
    assert_eq!(knot.address("db"), "127.0.0.99");
    let c = app.client.get("/v1/clusters/shop").await.unwrap();
    assert!(
        c["events"]
            .to_string()
            .contains("DNS record not moved to dba"),
        "{c}"
    );
}
