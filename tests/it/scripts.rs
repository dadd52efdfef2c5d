//! Scripts as building blocks on real test hosts: attachments in `$ATTACH_DIR` (the source
//! story's kernel modules), inputs through five levels and a cluster's master, packages,
//! revisions that pin, and a template's boot list.

use std::{path::Path, process::Command, time::Duration};

use client::ClientError;
use serde_json::{json, Value};
use shared::Status;

use crate::{TestApp, TestHost};

/// The field of a refused request.
fn refused(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, field, .. }) => (status, field.unwrap_or_default()),
        other => panic!("expected a 4xx, got {other:?}"),
    }
}

async fn script(app: &TestApp, doc: Value) -> Value {
    let (status, rev) = app.client.post("/v1/scripts", &doc).await.unwrap();
    assert_eq!(status, 201, "{rev}");
    rev
}

async fn run_ref(app: &TestApp, server: &str, params: Value) -> (shared::Action, String) {
    app.act(server, "run_script", params).await.unwrap()
}

/// A `.tgz` of fake kernel modules: what the boot script unpacks.
fn modules_tgz(dir: &Path) -> Vec<u8> {
    let src = dir.join("modules");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("sa_demo.ko"), vec![0x7f; 40_000]).unwrap();
    std::fs::write(src.join("modules.dep"), "sa_demo.ko:\n").unwrap();
    let tgz = dir.join("mods.tgz");
    let ok = Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(dir)
        .arg("modules")
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::read(tgz).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_script_unpacks_its_attachment_and_a_tampered_one_never_runs() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let tgz = modules_tgz(work.path());
    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&tgz))
    };
    script(
        &app,
        json!({"name": "kmods", "description": "install kernel modules from the attached tgz",
               "body": "set -e\nd=\"$SA_HOST_DIR/lib/modules\"\nmkdir -p \"$d\"\ntar xzf \"$ATTACH_DIR/mods.tgz\" -C \"$d\"\n\
                        test -s \"$d/modules/sa_demo.ko\"\necho \"$ATTACH_DIR\" > \"$SA_HOST_DIR/attach_dir\"\n\
                        echo \"modules ok: $(ls \"$d/modules\" | tr '\\n' ' ')\""}),
    )
    .await;
    let (status, rev) = app
        .client
        .put_bytes("/v1/scripts/kmods/attachments/mods.tgz", tgz.clone())
        .await
        .unwrap();
    assert_eq!(status, 200, "{rev}");
    assert_eq!(rev["revision"], 2);
    assert_eq!(rev["attachments"][0]["sha256"], sha);
    assert_eq!(rev["attachments"][0]["size"], tgz.len());
    let (status, t) = app
        .client
        .post(
            "/v1/templates",
            &json!({"name": "base", "boot": [{"name": "kmods"}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{t}");
    app.client
        .patch("/v1/servers/web1", &json!({"template": "base"}))
        .await
        .unwrap();

    let (a, log) = app.act("web1", "run_boot", json!({})).await.unwrap();
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("Step 1/1 of template base revision 1 boot: kmods revision 2"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Attachment mods.tgz ({} bytes, sha256 {sha}) checked.",
            tgz.len()
        )),
        "{log}"
    );
    assert!(log.contains("modules ok: modules.dep sa_demo.ko"), "{log}");
    assert!(host.dir.join("lib/modules/modules/sa_demo.ko").exists());
    // $ATTACH_DIR is gone once the script ended.
    let attach_dir = std::fs::read_to_string(host.dir.join("attach_dir")).unwrap();
    assert!(
        attach_dir.trim().starts_with("/tmp/sa-attach-"),
        "{attach_dir}"
    );
    assert!(
        !Path::new(attach_dir.trim()).exists(),
        "{attach_dir} left behind"
    );
    assert_eq!(a.spec.params()["steps"][0]["revision"], 2);

    // The stored content changes behind the revision's back: the shipment is refused and the
    // script never runs.
    std::fs::remove_dir_all(host.dir.join("lib")).unwrap();
    sqlx::query("UPDATE blob_chunks SET data = set_byte(data, 100, 255 - get_byte(data, 100))")
        .execute(&app.pool)
        .await
        .unwrap();
    let (a, log) = run_ref(&app, "web1", json!({"script_ref": {"name": "kmods"}})).await;
    assert_eq!(a.status, Status::Failed, "{log}");
    assert!(log.contains("sha256 mismatch"), "{log}");
    assert!(!log.contains("modules ok"), "{log}");
    assert!(!host.dir.join("lib").exists(), "the script ran");
    let leftovers: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("sa-attach-"))
        .filter(|e| {
            std::fs::read_dir(e.path())
                .is_ok_and(|mut d| d.any(|f| f.is_ok_and(|f| f.file_name() == "mods.tgz")))
        })
        .filter(|e| {
            e.metadata().is_ok_and(|m| {
                m.modified()
                    .is_ok_and(|t| t.elapsed().is_ok_and(|d| d < Duration::from_secs(30)))
            })
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "a tampered $ATTACH_DIR was left: {leftovers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_resolve_through_five_levels_and_bad_ones_are_named() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let level = |n: &str| json!({"name": n, "type": "text", "default": "script"});
    script(
        &app,
        json!({"name": "show", "body": "echo \"A=$A B=$B C=$C D=$D E=$E N=$N M=$M\"",
               "inputs": [level("A"), level("B"), level("C"), level("D"), level("E"),
                          {"name": "N", "type": "number", "default": 3},
                          {"name": "M", "type": "choice", "choices": ["blue", "green"], "required": true},
                          {"name": "PW", "type": "secret"}]}),
    )
    .await;
    let (s, _) = app
        .client
        .post("/v1/templates", &json!({"name": "t", "inputs": {"B": "template", "C": "template", "D": "template", "E": "template"}}))
        .await
        .unwrap();
    assert_eq!(s, 201);
    let (s, _) = app
        .client
        .post("/v1/deployments", &json!({"name": "prod", "inputs": {"C": "deployment", "D": "deployment", "E": "deployment", "M": "blue"}}))
        .await
        .unwrap();
    assert_eq!(s, 201);
    let placed = app
        .client
        .patch("/v1/servers/web1", &json!({"template": "t", "deployment": "prod", "inputs": {"D": "server", "E": "server"}}))
        .await
        .unwrap();
    assert_eq!(
        (placed["template"].as_str(), placed["deployment"].as_str()),
        (Some("t"), Some("prod"))
    );
    let (s, _) = app
        .client
        .post("/v1/secrets", &json!({"name": "pw", "value": "hunter2"}))
        .await
        .unwrap();
    assert_eq!(s, 201);

    let (a, log) = run_ref(
        &app,
        "web1",
        json!({"script_ref": {"name": "show"}, "inputs": {"E": "action", "N": "4.5", "PW": {"secret_ref": "pw"}}}),
    )
    .await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("A=script B=template C=deployment D=server E=action N=4.5 M=blue"),
        "{log}"
    );
    for line in [
        "Input A = script (from default)",
        "Input B = template (from template t)",
        "Input C = deployment (from deployment prod)",
        "Input D = server (from server web1)",
        "Input E = action (from action)",
        "Input M = blue (from deployment prod)",
        "Input PW = *** (secret, from action)",
    ] {
        assert!(log.contains(line), "{line:?} missing:\n{log}");
    }
    let shown = app
        .client
        .get(&format!("/v1/actions/{}", a.id))
        .await
        .unwrap();
    assert_eq!(
        shown["params"]["script_ref"],
        json!({"name": "show", "revision": 1})
    );
    assert_eq!(
        shown["params"]["resolved"]["C"],
        json!({"type": "text", "value": "deployment", "source": "deployment prod"})
    );

    // Refused at submission, naming the input; nothing stored.
    let before = app.action_count().await;
    let submit = |inputs: Value| {
        let client = app.client.clone();
        async move {
            client
                .submit(&json!({"server": "web1", "kind": "run_script", "params": {"script_ref": {"name": "show"}, "inputs": inputs}}))
                .await
        }
    };
    assert_eq!(
        refused(submit(json!({"M": "red"})).await),
        (400, "params.inputs.M".into())
    );
    assert_eq!(
        refused(submit(json!({"N": "many"})).await),
        (400, "params.inputs.N".into())
    );
    assert_eq!(
        refused(submit(json!({"Q": "1"})).await),
        (400, "params.inputs.Q".into())
    );
    app.client
        .patch(
            "/v1/deployments/prod",
            &json!({"inputs": {"C": "deployment"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        refused(submit(json!({})).await),
        (400, "params.inputs.M".into())
    );
    assert_eq!(
        refused(app.client.submit(&json!({"server": "web1", "kind": "run_script", "params": {"script_ref": {"name": "nope"}}})).await),
        (400, "params.script_ref".into())
    );
    assert_eq!(app.action_count().await, before);

    // A clone keeps the source's values under its own.
    let (s, copy) = app
        .client
        .post(
            "/v1/deployments/prod/clone",
            &json!({"name": "staging", "inputs": {"M": "green"}}),
        )
        .await
        .unwrap();
    assert_eq!(s, 201);
    assert_eq!(copy["inputs"], json!({"C": "deployment", "M": "green"}));
    app.client
        .patch("/v1/servers/web1", &json!({"deployment": "staging"}))
        .await
        .unwrap();
    let (a, log) = run_ref(&app, "web1", json!({"script_ref": {"name": "show"}})).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("C=deployment D=server E=server N=3 M=green"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_input_follows_a_promote() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    let (a_host, slaves) = app.mariadb_cluster(1).await.unwrap();
    let web = TestHost::start().unwrap();
    app.add_host("web1", &web).await.unwrap();
    script(
        &app,
        json!({"name": "app-config", "body": "echo \"db host is $DB_HOST\"",
               "inputs": [{"name": "DB_HOST", "type": "cluster_master", "default": "shop"}]}),
    )
    .await;
    let (a, log) = run_ref(&app, "web1", json!({"script_ref": {"name": "app-config"}})).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(
        log.contains(&format!("db host is {}", a_host.address)),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Input DB_HOST = {} (cluster_master shop, from default)",
            a_host.address
        )),
        "{log}"
    );

    let p = app.client.promote_cluster("shop", false).await.unwrap();
    let p = app.wait(p.id).await;
    assert_eq!(p.status, Status::Succeeded, "{}", app.log(p.id).await);
    let (a, log) = run_ref(&app, "web1", json!({"script_ref": {"name": "app-config"}})).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(
        log.contains(&format!("db host is {}", slaves[0].address)),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_package_is_installed_once() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    // The machine's package manager is the test host's (scripts/setup.sh fetched the .deb).
    let installed = || {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", "figlet"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).ends_with(" installed")
    };
    let _ = Command::new("dpkg").args(["--purge", "figlet"]).output();
    assert!(!installed());
    // No network in a test: apt finds the package in its cache (scripts/setup.sh keeps a copy).
    for deb in std::fs::read_dir("/var/cache/serveractions/debs").unwrap() {
        let deb = deb.unwrap().path();
        std::fs::copy(
            &deb,
            Path::new("/var/cache/apt/archives").join(deb.file_name().unwrap()),
        )
        .unwrap();
    }
    script(
        &app,
        json!({"name": "banner", "body": "figlet -v | head -1", "packages": ["figlet"]}),
    )
    .await;
    let (a, log) = run_ref(&app, "web1", json!({"script_ref": {"name": "banner"}})).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(log.contains("Installing packages (apt): figlet"), "{log}");
    assert!(log.contains("FIGlet"), "{log}");
    let (a, log) = run_ref(&app, "web1", json!({"script_ref": {"name": "banner"}})).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("Packages already installed (apt): figlet"),
        "{log}"
    );
    assert!(!log.contains("Installing packages"), "{log}");
    assert!(installed());
    let _ = Command::new("dpkg").args(["--purge", "figlet"]).output();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_pins_and_an_edit_does_not_change_a_submitted_run() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    script(&app, json!({"name": "greet", "body": "sleep 1\necho one"})).await;
    let first = app
        .client
        .submit(&json!({"server": "web1", "kind": "run_script", "params": {"script_ref": {"name": "greet"}}}))
        .await
        .unwrap();
    let rev = app
        .client
        .put("/v1/scripts/greet", &json!({"body": "echo two"}))
        .await
        .unwrap();
    assert_eq!(rev["revision"], 2);
    let first = app.wait(first.id).await;
    let log = app.log(first.id).await;
    assert_eq!(first.status, Status::Succeeded, "{log}");
    assert!(
        log.contains("Script greet revision 1.") && log.contains("\none\n"),
        "{log}"
    );
    assert!(!log.contains("two"), "{log}");
    let (_, log) = run_ref(&app, "web1", json!({"script_ref": {"name": "greet"}})).await;
    assert!(log.contains("\ntwo\n"), "{log}");
    let (_, log) = run_ref(
        &app,
        "web1",
        json!({"script_ref": {"name": "greet", "revision": 1}}),
    )
    .await;
    assert!(log.contains("\none\n"), "{log}");

    // Repeated exactly: the first action's revision, though the script moved on.
    let (s, again) = app
        .client
        .post(&format!("/v1/actions/{}/repeat", first.id), &json!({}))
        .await
        .unwrap();
    assert_eq!(s, 202, "{again}");
    let again = app.wait(again["id"].as_i64().unwrap()).await;
    let log = app.log(again.id).await;
    assert!(
        log.contains("Script greet revision 1.") && log.contains("\none\n"),
        "{log}"
    );
    let revs = app.client.get("/v1/scripts/greet/revisions").await.unwrap();
    assert_eq!(revs["revisions"].as_array().unwrap().len(), 2);
    let diff = app
        .client
        .get("/v1/scripts/greet/diff?from=1&to=2")
        .await
        .unwrap();
    let text = diff["diff"].as_str().unwrap();
    assert!(
        text.contains("-echo one") && text.contains("+echo two") && text.contains("-sleep 1"),
        "{text}"
    );
    assert_eq!(
        refused(app.client.submit(&json!({"server": "web1", "kind": "run_script", "params": {"script_ref": {"name": "greet", "revision": 9}}})).await),
        (400, "params.script_ref".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templates_boot_list_stops_at_the_failing_script() {
    let mut app = TestApp::spawn().await.unwrap();
    app.spawn_worker().await.unwrap();
    for (name, body) in [
        ("first", "echo first > \"$SA_HOST_DIR/first\""),
        ("broken", "echo about to fail; exit 3"),
        ("third", "echo third > \"$SA_HOST_DIR/third\""),
    ] {
        script(&app, json!({"name": name, "body": body})).await;
    }
    let (s, _) = app
        .client
        .post("/v1/templates", &json!({"name": "web", "boot": [{"name": "first"}, {"name": "broken"}, {"name": "third"}],
                                        "decommission": [{"name": "first"}]}))
        .await
        .unwrap();
    assert_eq!(s, 201);
    // A new server, given the template.
    let host = TestHost::start().unwrap();
    app.add_host("web2", &host).await.unwrap();
    app.client
        .patch("/v1/servers/web2", &json!({"template": "web"}))
        .await
        .unwrap();
    let (a, log) = app.act("web2", "run_boot", json!({})).await.unwrap();
    assert_eq!(a.status, Status::Failed, "{log}");
    assert_eq!(a.exit_code, Some(3));
    assert!(
        log.contains("Step 1/3 of template web revision 1 boot: first revision 1"),
        "{log}"
    );
    assert!(log.contains("Step 1/3 (first) succeeded."), "{log}");
    assert!(
        log.contains("Step 2/3 (broken) failed with exit code 3: stopping"),
        "{log}"
    );
    assert!(!log.contains("Step 3/3"), "{log}");
    assert!(host.dir.join("first").exists());
    assert!(!host.dir.join("third").exists());
    // A template that names a missing script is refused, naming its place.
    let (status, field) = refused(
        app.client
            .post(
                "/v1/templates",
                &json!({"name": "bad", "boot": [{"name": "first"}, {"name": "missing"}]}),
            )
            .await,
    );
    assert_eq!((status, field.as_str()), (400, "boot[1]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sactl_stores_attaches_diffs_and_runs_a_script() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    let sactl = |args: &[&str]| crate::cli::sactl(&app, args);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("greet.sh");
    std::fs::write(
        &body,
        "echo \"$GREETING $WHO: $(cat \"$ATTACH_DIR/note.txt\")\"\n",
    )
    .unwrap();
    let note = dir.path().join("note.txt");
    std::fs::write(&note, "attached\n").unwrap();
    let (b, n) = (body.to_str().unwrap(), note.to_str().unwrap());
    let (code, out, err) = sactl(&[
        "scripts",
        "add",
        "greet",
        "--file",
        b,
        "--input",
        "GREETING:text:hello",
        "--input",
        "WHO:text",
        "--required",
        "WHO",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = sactl(&["scripts", "attach", "greet", n]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = sactl(&[
        "scripts",
        "run",
        "web1",
        "greet",
        "-i",
        "WHO=world",
        "--wait",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("hello world: attached"), "{out}");
    // A missing required input is refused naming it.
    let (code, _, err) = sactl(&["scripts", "run", "web1", "greet", "--wait"]);
    assert_ne!(code, 0);
    assert!(err.contains("params.inputs.WHO"), "{err}");
    let (code, out, err) = sactl(&["scripts", "diff", "greet", "1", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+attachment: note.txt 9 bytes"), "{out}");
    let (code, out, _) = sactl(&["scripts", "list"]);
    assert!(code == 0 && out.contains("greet"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_attachment_is_stored_and_shipped_whole() {
    let mut app = TestApp::spawn().await.unwrap();
    let host = TestHost::start().unwrap();
    app.add_host("web1", &host).await.unwrap();
    app.spawn_worker().await.unwrap();
    // Incompressible bytes (xorshift), 100 MiB.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..100 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&data))
    };
    script(&app, json!({"name": "big", "body": "sha256sum \"$ATTACH_DIR/big.bin\"; stat -c %s \"$ATTACH_DIR/big.bin\""})).await;
    let (status, rev) = app
        .client
        .put_bytes("/v1/scripts/big/attachments/big.bin", data)
        .await
        .unwrap();
    assert_eq!(status, 200, "{rev}");
    assert_eq!(rev["attachments"][0]["size"], 100 << 20);
    assert_eq!(rev["attachments"][0]["sha256"], sha);
    let (a, log) = run_ref(&app, "web1", json!({"script_ref": {"name": "big"}})).await;
    assert_eq!(a.status, Status::Succeeded, "{log}");
    assert!(log.contains(&format!("{sha}  /tmp/sa-attach-")), "{log}");
    assert!(log.contains(&format!("\n{}\n", 100 << 20)), "{log}");
}
