//! Messages no worker can use go to the dead-letter queue once, and do not block others.

use std::time::Duration;

use lapin::{options::BasicPublishOptions, BasicProperties};
use shared::Status;

use crate::{eventually, TestApp, TestHost};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_and_unknown_messages_are_dead_lettered() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    let worker = app.spawn_worker().await.unwrap();

    let conn = shared::queue::connect(&app.cfg.amqp_url, "poison-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    app.topology.declare(&ch).await.unwrap();
    for body in [&b"not json at all"[..], br#"{"action_id": 987654321}"#] {
        ch.basic_publish(
            app.topology.exchange.as_str().into(),
            shared::queue::ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    // Others still run.
    let a = app
        .client
        .run_script("web1", "echo fine", &[])
        .await
        .unwrap();
    assert_eq!(app.wait(a.id).await.status, Status::Succeeded);

    let dead = eventually(Duration::from_secs(10), async || {
        let q = ch
            .queue_declare(
                app.topology.dead_queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        q.message_count() == 2
    })
    .await;
    assert!(
        dead,
        "the two poison messages are not in the dead-letter queue"
    );
    assert_eq!(worker.metrics.dead_lettered.get(), 2);
    // Nothing loops: the main queue is empty.
    assert_eq!(app.queued_messages().await.unwrap(), 0);
}
