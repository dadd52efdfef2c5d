//! Broker and database faults, on private RabbitMQ nodes and PostgreSQL clusters (restarting
//! the shared ones would break the tests running beside these): the api keeps accepting while
//! RabbitMQ is down, restarts lose nothing, and a long action outlives a short
//! acknowledgement timeout.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use shared::Status;
use testbed::services::{PrivatePostgres, PrivateRabbit};

use crate::{eventually, TestApp, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_accepts_while_rabbitmq_is_down_and_the_outbox_publishes_later() {
    let rabbit = PrivateRabbit::start().unwrap();
    let mut app = TestApp::spawn_with(|c| c.amqp_url = rabbit.url())
        .await
        .unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    rabbit.stop().unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let started = std::time::Instant::now();
        let a = app
            .client
            .run_script("web1", &format!("echo while-down-{i}"), &[])
            .await
            .unwrap();
        assert_eq!(a.status, Status::Queued);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "submit blocked {:?}",
            started.elapsed()
        );
        ids.push(a.id);
    }
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM actions WHERE published_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(unpublished, 5);
    rabbit.start_again().unwrap();
    for id in ids {
        let a = app.wait(id).await;
        assert_eq!(a.status, Status::Succeeded, "{}", app.log(id).await);
        assert_eq!(app.log(id).await.matches("Executing action").count(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_and_postgres_restarts_during_a_burst_lose_nothing() {
    let rabbit = PrivateRabbit::start().unwrap();
    let pg = PrivatePostgres::start().unwrap();
    let mut app = TestApp::spawn_with(|c| {
        c.amqp_url = rabbit.url();
        c.database_url = pg.url("serveractions_faults");
    })
    .await
    .unwrap();
    let hosts: Vec<TestHost> = (0..3).map(|_| TestHost::start().unwrap()).collect();
    for (i, h) in hosts.iter().enumerate() {
        app.add_host(&format!("h{i}"), h).await.unwrap();
    }
    app.spawn_worker().await.unwrap();
    app.spawn_worker().await.unwrap();
    let script = r#"echo "start $N" >> "$SA_HOST_DIR/marks"; sleep 0.3; echo "end $N" >> "$SA_HOST_DIR/marks""#;
    let mut ids = Vec::new();
    for n in 0..60 {
        let tag = format!("a{n}");
        let a = app
            .client
            .run_script(&format!("h{}", n % 3), script, &[("N", &tag)])
            .await
            .unwrap();
        ids.push((a.id, tag));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg.restart().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    rabbit.restart().unwrap();
    // Every action ends, exactly once.
    let mut by_status = std::collections::BTreeMap::new();
    for (id, _) in &ids {
        let a = app.client.wait(*id, Duration::from_secs(90)).await.unwrap();
        assert!(a.status.is_terminal(), "action {id} still {}", a.status);
        *by_status.entry(a.status.as_str()).or_insert(0) += 1;
    }
    println!("after the restarts: {by_status:?}");
    assert_eq!(by_status.get("succeeded"), Some(&60), "{by_status:?}");
    let marks: String = hosts.iter().map(|h| h.read("marks")).collect();
    for (_, tag) in &ids {
        assert_eq!(
            marks.matches(&format!("start {tag}\n")).count(),
            1,
            "{tag} did not run exactly once"
        );
        assert_eq!(
            marks.matches(&format!("end {tag}\n")).count(),
            1,
            "{tag} did not finish once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_action_outlives_a_short_acknowledgement_timeout() {
    let rabbit = PrivateRabbit::start().unwrap();
    rabbit
        .eval("application:set_env(rabbit, consumer_timeout, 2000), application:set_env(rabbit, channel_tick_interval, 500).")
        .unwrap();
    // Negative control: a consumer holding a delivery unacked loses its channel.
    let conn = shared::queue::connect(&rabbit.url(), "control")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("control".into(), Default::default(), Default::default())
        .await
        .unwrap();
    ch.basic_publish(
        "".into(),
        "control".into(),
        BasicPublishOptions::default(),
        b"x",
        Default::default(),
    )
    .await
    .unwrap();
    let mut c = ch
        .basic_consume(
            "control".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let _held = c.next().await.unwrap().unwrap();
    let closed = eventually(Duration::from_secs(15), async || !ch.status().connected()).await;
    assert!(
        closed,
        "the broker's acknowledgement timeout is not in force"
    );

    let mut app = TestApp::spawn_with(|c| {
        c.amqp_url = rabbit.url();
        c.worker_concurrency = 1;
    })
    .await
    .unwrap();
    let web1 = TestHost::start().unwrap();
    let web2 = TestHost::start().unwrap();
    app.add_host("web1", &web1).await.unwrap();
    app.add_host("web2", &web2).await.unwrap();
    app.spawn_worker().await.unwrap();
    let long = app
        .client
        .run_script("web1", "echo run >> \"$SA_HOST_DIR/runs\"; sleep 7", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Arrives while the only slot is busy: it must not sit unacked past the timeout.
    let other = app
        .client
        .run_script("web2", "echo other", &[])
        .await
        .unwrap();
    let a = app.wait(long.id).await;
    assert_eq!(a.status, Status::Succeeded, "{}", app.log(long.id).await);
    assert_eq!(
        web1.read("runs"),
        "run\n",
        "the long action ran more than once"
    );
    let b = app.wait(other.id).await;
    assert_eq!(b.status, Status::Succeeded, "{}", app.log(other.id).await);
}
