//! EC2 that really boots something. moto implements the EC2 API but runs nothing; given a VPC
//! `127.88.0.0/16` and a subnet `127.88.N.0/24` it hands out loopback addresses. `Ec2Bed` plays
//! the hypervisor: it watches moto's `DescribeInstances` for its subnet and boots each new
//! instance as a test host on the instance's private address, with the host key and the
//! authorized keys from the cloud-init user data (plus its own mariadbd for the DB image), and
//! kills it when the instance is stopped or terminated. Each bed claims its own subnet, so
//! beds in parallel tests never share an address; nothing outside 127.0.0.0/8 is touched.

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use aws_sdk_ec2::{
    config::{BehaviorVersion, Credentials, Region},
    types::{Filter, InstanceAttributeName},
    Client,
};
use base64::Engine;
use serde_json::{json, Value};

use crate::{hosts::LOGIN_USER, services::Moto, TestHost};

/// Where each booted instance's root is linked as `<address>`: the profile's DB paths.
pub const ROOTS: &str = "/tmp/sa-ec2";

/// What the plain image ships to install MariaDB (`installing_profile`'s `install_command`):
/// `install-mariadb DIR ADDRESS` makes a datadir, an option file (binary log, a server_id from
/// the address), a `ctl start|stop|restart` and starts mariadbd on ADDRESS:3306, as the login
/// user.
const INSTALLER: &str = "/tmp/sa-testbed/install-mariadb";

/// A booted instance.
struct Booted {
    host: TestHost,
    link: PathBuf,
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.link);
        // A mariadbd the installer started is not the host's child.
        if let Ok(pid) = fs::read_to_string(self.host.dir.join("db/mysqld.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .output();
        }
    }
}

#[derive(Default)]
struct Machines {
    booted: HashMap<String, Booted>,
    /// Instances being booted, or that could not be (never tried again).
    seen: HashSet<String>,
    /// How long each boot took, by instance (the harness's share of a launch).
    boot_s: HashMap<String, f64>,
    errors: Vec<String>,
}

pub struct Ec2Bed {
    /// S3 and EC2 in one emulator.
    pub moto: Moto,
    pub subnet_id: String,
    /// The image booted as a plain host, and the one booted with a mariadbd.
    pub image_id: String,
    pub db_image_id: String,
    client: Client,
    machines: Arc<Mutex<Machines>>,
    watcher: tokio::task::JoinHandle<()>,
    _claim: SubnetClaim,
}

impl Ec2Bed {
    pub async fn start() -> anyhow::Result<Self> {
        let moto = Moto::start().await?;
        let client = client(&moto.endpoint()).await;
        let claim = SubnetClaim::take()?;
        fs::create_dir_all(ROOTS)?;
        crate::hosts::client_key()?; // makes /tmp/sa-testbed
        let tmp = format!("{INSTALLER}.{}", std::process::id());
        fs::write(&tmp, include_str!("testbed-files/install-mariadb.sh"))?;
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        fs::rename(&tmp, INSTALLER)?;
        let vpc = client
            .create_vpc()
            .cidr_block("127.88.0.0/16")
            .send()
            .await?
            .vpc()
            .and_then(|v| v.vpc_id().map(str::to_string))
            .context("CreateVpc named no VPC")?;
        let subnet_id = client
            .create_subnet()
            .vpc_id(vpc)
            .cidr_block(format!("127.88.{}.0/24", claim.n))
            .send()
            .await?
            .subnet()
            .and_then(|s| s.subnet_id().map(str::to_string))
            .context("CreateSubnet named no subnet")?;
        let images: Vec<String> = client
            .describe_images()
            .send()
            .await?
            .images()
            .iter()
            .filter_map(|i| i.image_id().map(str::to_string))
            .take(2)
            .collect();
        anyhow::ensure!(images.len() == 2, "moto lists fewer than two images");
        let machines = Arc::new(Mutex::new(Machines::default()));
        let watcher = tokio::spawn(watch(
            client.clone(),
            subnet_id.clone(),
            images[1].clone(),
            claim.n,
            machines.clone(),
        ));
        Ok(Self {
            moto,
            subnet_id,
            image_id: images[0].clone(),
            db_image_id: images[1].clone(),
            client,
            machines,
            watcher,
            _claim: claim,
        })
    }

    /// Point a configuration at this bed's S3 and EC2.
    pub fn configure(&self, cfg: &mut shared::Config) {
        self.moto.configure(cfg);
        cfg.ec2_endpoint = Some(self.moto.endpoint());
        cfg.ec2_access_key_id = Some("test".into());
        cfg.ec2_secret_access_key = Some("test".into());
        cfg.launch_timeout_s = 60;
    }

    /// A launch profile for this bed: a plain host, or (`db`) one with a mariadbd whose
    /// settings name the booted host's directories by `{address}`.
    pub fn profile(&self, db: bool) -> Value {
        let mut p = json!({
            "image_id": if db { &self.db_image_id } else { &self.image_id },
            "instance_type": "t3.micro",
            "subnet_id": self.subnet_id,
            "ssh_user": LOGIN_USER,
            "tags": {"env": "test"},
        });
        if db {
            p["db_server"] = db_server(&format!("{ROOTS}/{{address}}/mysql"));
        }
        p
    }

    /// A DB profile on the plain image, which has no mariadbd: its `install_command` installs
    /// one (in the host's home, `$SA_HOST_DIR/db`).
    pub fn installing_profile(&self) -> Value {
        let mut p = self.profile(false);
        let d = format!("{ROOTS}/{{address}}/home/db");
        p["db_server"] = db_server(&d);
        p["db_server"]["install_command"] = json!(format!("{INSTALLER} {d} {{address}}"));
        p
    }

    pub fn ec2(&self) -> &Client {
        &self.client
    }

    /// Do something with the host booted at `address` (None: nothing runs there).
    pub fn with_host<R>(&self, address: &str, f: impl FnOnce(&mut TestHost) -> R) -> Option<R> {
        let mut m = self.machines.lock().expect("poisoned");
        m.booted
            .values_mut()
            .find(|b| b.host.address.to_string() == address)
            .map(|b| f(&mut b.host))
    }

    /// Whether a host runs at `address`.
    pub fn runs(&self, address: &str) -> bool {
        self.with_host(address, |_| ()).is_some()
    }

    /// The harness's boot time of each instance it booted (seconds).
    pub fn boot_times(&self) -> HashMap<String, f64> {
        self.machines.lock().expect("poisoned").boot_s.clone()
    }

    /// Instances that could not be booted, and why.
    pub fn errors(&self) -> Vec<String> {
        self.machines.lock().expect("poisoned").errors.clone()
    }

    /// Every instance in this bed's subnet: (id, state, tags).
    pub async fn instances(
        &self,
    ) -> anyhow::Result<Vec<(String, String, HashMap<String, String>)>> {
        let out = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("subnet-id")
                    .values(&self.subnet_id)
                    .build(),
            )
            .send()
            .await?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                let tags = i
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                (
                    i.instance_id().unwrap_or_default().to_string(),
                    i.state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default(),
                    tags,
                )
            })
            .collect())
    }

    /// The client token an instance was launched with.
    pub async fn client_token(&self, id: &str) -> anyhow::Result<String> {
        let out = self
            .client
            .describe_instances()
            .instance_ids(id)
            .send()
            .await?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.client_token().map(str::to_string))
            .unwrap_or_default())
    }

    /// An instance's user data, decoded.
    pub async fn user_data(&self, id: &str) -> anyhow::Result<String> {
        user_data(&self.client, id).await
    }
}

impl Drop for Ec2Bed {
    fn drop(&mut self) {
        self.watcher.abort();
        // The hosts die with their TestHost values.
        self.machines.lock().map(|mut m| m.booted.clear()).ok();
    }
}

/// A profile's `db_server` for a mariadbd kept in `dir` (with `my.cnf`, `conf.d/`, `data/`
/// and `ctl`) on the instance's address.
fn db_server(dir: &str) -> Value {
    json!({
        "db_host": "{address}",
        "db_config_file": format!("{dir}/conf.d/99-serveractions.cnf"),
        "db_datadir": format!("{dir}/data"),
        "db_restart_command": format!("{dir}/ctl restart"),
        "db_stop_command": format!("{dir}/ctl stop"),
        "db_start_command": format!("{dir}/ctl start"),
    })
}

async fn client(endpoint: &str) -> Client {
    let cfg = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "testbed"))
        .endpoint_url(endpoint)
        .load()
        .await;
    Client::new(&cfg)
}

async fn user_data(client: &Client, id: &str) -> anyhow::Result<String> {
    let out = client
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(InstanceAttributeName::UserData)
        .send()
        .await?;
    let b64 = out.user_data().and_then(|v| v.value()).unwrap_or_default();
    Ok(String::from_utf8(
        base64::engine::general_purpose::STANDARD.decode(b64)?,
    )?)
}

/// The hypervisor loop: boot what is new, kill what stopped.
async fn watch(
    client: Client,
    subnet: String,
    db_image: String,
    n: u8,
    machines: Arc<Mutex<Machines>>,
) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(out) = client
            .describe_instances()
            .filters(Filter::builder().name("subnet-id").values(&subnet).build())
            .send()
            .await
        else {
            continue;
        };
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            let id = i.instance_id().unwrap_or_default().to_string();
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|s| s.as_str())
                .unwrap_or("");
            let alive = matches!(state, "pending" | "running");
            let mut m = machines.lock().expect("poisoned");
            if !alive {
                m.booted.remove(&id);
                continue;
            }
            if !m.seen.insert(id.clone()) {
                continue;
            }
            drop(m);
            let Some(address) = i
                .private_ip_address()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            // Only our own loopback subnet is ever booted.
            if address.octets()[..3] != [127, 88, n] {
                continue;
            }
            let db = i.image_id() == Some(db_image.as_str());
            tokio::spawn(boot(client.clone(), id, address, db, machines.clone()));
        }
    }
}

async fn boot(
    client: Client,
    id: String,
    address: Ipv4Addr,
    db: bool,
    machines: Arc<Mutex<Machines>>,
) {
    let started = Instant::now();
    let result = async {
        let data = user_data(&client, &id).await?;
        let cfg: Value = serde_json::from_str(
            data.strip_prefix("#cloud-config\n")
                .context("user data is not #cloud-config")?,
        )?;
        let host_key = cfg["ssh_keys"]["ed25519_private"]
            .as_str()
            .map(str::to_string);
        let authorized: Vec<String> = cfg["ssh_authorized_keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let [_, _, x, y] = address.octets();
        let server_id = 200_000 + u32::from(x) * 256 + u32::from(y);
        tokio::task::spawn_blocking(move || {
            let keys = authorized.join("\n") + "\n";
            let host = TestHost::boot(address, host_key.as_deref(), Some(&keys), Some(server_id))?;
            let host = if db { host.with_mariadb()? } else { host };
            let link = PathBuf::from(ROOTS).join(address.to_string());
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(host.root(), &link)?;
            anyhow::Ok(Booted { host, link })
        })
        .await?
    }
    .await;
    let mut m = machines.lock().expect("poisoned");
    match result {
        Ok(b) => {
            m.boot_s.insert(id.clone(), started.elapsed().as_secs_f64());
            m.booted.insert(id, b);
        }
        Err(e) => m.errors.push(format!("{id} at {address}: {e:#}")),
    }
}

/// One `127.88.N.0/24` per bed, claimed by a file holding the claimer's pid (a dead claimer's
/// file is taken over).
struct SubnetClaim {
    n: u8,
    file: PathBuf,
}

impl SubnetClaim {
    fn take() -> anyhow::Result<Self> {
        let dir = PathBuf::from("/tmp/sa-testbed/subnets");
        fs::create_dir_all(&dir)?;
        let me = std::process::id();
        let start = (me as usize + Instant::now().elapsed().subsec_nanos() as usize) % 250;
        for k in 0..250 {
            let n = ((start + k) % 250 + 1) as u8;
            let file = dir.join(n.to_string());
            if let Ok(pid) = fs::read_to_string(&file) {
                let alive = pid
                    .trim()
                    .parse::<u32>()
                    .is_ok_and(|p| PathBuf::from(format!("/proc/{p}")).exists());
                if alive {
                    continue;
                }
                let _ = fs::remove_file(&file);
            }
            let created = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file);
            if let Ok(mut f) = created {
                use std::io::Write;
                write!(f, "{me}")?;
                return Ok(Self { n, file });
            }
        }
        anyhow::bail!("no free subnet in 127.88.0.0/16")
    }
}

impl Drop for SubnetClaim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
    }
}
