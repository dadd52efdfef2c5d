//! The master record on real DNS providers: a Knot of the test's own on loopback, changed by
//! RFC 2136 updates signed with a TSIG key the test made; Route 53 on moto_server.

use serde_json::json;
use shared::Status;
use testbed::services::{Knot, Moto};

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
    assert!(log.contains("(rfc2136 change accepted after"), "{log}");
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
    if let Some(t) = log.lines().find(|l| l.contains("change accepted after")) {
        println!("rfc2136 switchover: {t}");
    }

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

/// A Route 53 client on the emulator, for the test's own view and changes.
async fn route53(moto: &Moto) -> aws_sdk_route53::Client {
    let base = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_route53::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    let conf = aws_sdk_route53::config::Builder::from(&base)
        .endpoint_url(moto.endpoint())
        .build();
    aws_sdk_route53::Client::from_conf(conf)
}

async fn route53_address(r53: &aws_sdk_route53::Client, zone: &str, name: &str) -> Option<String> {
    let out = r53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .send()
        .await
        .unwrap();
    out.resource_record_sets()
        .iter()
        .find(|s| s.name().trim_end_matches('.') == name && s.r#type().as_str() == "A")
        .and_then(|s| s.resource_records().first())
        .map(|r| r.value().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn route53_moves_the_master_record_and_refuses_a_stale_change() {
    use aws_sdk_route53::types::{
        Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
    };
    let moto = Moto::start().await.unwrap();
    let endpoint = moto.endpoint();
    let mut app = TestApp::spawn_with(|c| c.route53_endpoint = Some(endpoint))
        .await
        .unwrap();
    app.spawn_worker().await.unwrap();
    let (a, b) = app.mariadb_pair().await.unwrap();
    let r53 = route53(&moto).await;
    let zone = r53
        .create_hosted_zone()
        .name("shop.example.")
        .caller_reference("sa-test")
        .send()
        .await
        .unwrap();
    let zone = zone
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_string();
    app.client
        .post("/v1/secrets", &json!({"name": "r53-key", "value": "test"}))
        .await
        .unwrap();
    app.client
        .patch(
            "/v1/clusters/shop",
            &json!({"dns": {"provider": "route53", "zone": zone, "name": "db.shop.example",
                            "key_name": "test", "key_ref": "r53-key", "ttl": 5}}),
        )
        .await
        .unwrap();
    let (m, log) = app
        .act("dba", "db_configure_master", json!({"cluster": "shop"}))
        .await
        .unwrap();
    assert_eq!(m.status, Status::Succeeded, "{log}");
    assert!(log.contains("(route53 change accepted after"), "{log}");
    assert_eq!(
        route53_address(&r53, &zone, "db.shop.example").await,
        Some(a.address.to_string())
    );
    let (p, log) = app.act("dbb", "db_promote", json!({})).await.unwrap();
    assert_eq!(p.status, Status::Succeeded, "{log}");
    assert_eq!(
        route53_address(&r53, &zone, "db.shop.example").await,
        Some(b.address.to_string()),
        "{log}"
    );
    // Moved behind ServerActions' back: not overwritten.
    let set = ResourceRecordSet::builder()
        .name("db.shop.example.")
        .r#type(RrType::A)
        .ttl(5)
        .resource_records(
            ResourceRecord::builder()
                .value("127.0.0.99")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    r53.change_resource_record_sets()
        .hosted_zone_id(&zone)
        .change_batch(
            ChangeBatch::builder()
                .changes(
                    Change::builder()
                        .action(ChangeAction::Upsert)
                        .resource_record_set(set)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let (p, log) = app.act("dba", "db_promote", json!({})).await.unwrap();
    assert_eq!(p.status, Status::Succeeded, "{log}");
    assert!(log.contains("a newer change won; not overwritten"), "{log}");
    assert_eq!(
        route53_address(&r53, &zone, "db.shop.example")
            .await
            .as_deref(),
        Some("127.0.0.99")
    );
}
