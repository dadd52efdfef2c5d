//! EC2 through `aws-sdk-ec2`: run an instance tagged with its launch action, find it again by
//! that tag, read its state, user data and console, stop and terminate it. The SDK's waiters
//! poll every 15 s: callers poll `instance` themselves every second or two.

use aws_sdk_ec2::{
    config::{Credentials, Region},
    error::DisplayErrorContext,
    types::{
        Filter, IamInstanceProfileSpecification, Instance as SdkInstance, InstanceStateName,
        InstanceType, ResourceType, Tag, TagSpecification,
    },
    Client,
};
use base64::Engine;
use secrecy::ExposeSecret;
use shared::{launch::LaunchProfile, Config};

/// The tag naming the action that launched an instance: how a retried launch finds it.
pub const LAUNCH_TAG: &str = "serveractions:launch";
pub const SERVER_TAG: &str = "serveractions:server";

#[derive(Debug, thiserror::Error)]
#[error("ec2 {what}: {message}")]
pub struct Ec2Error {
    what: &'static str,
    message: String,
}

fn failed<E: std::error::Error>(what: &'static str) -> impl FnOnce(E) -> Ec2Error {
    move |e| Ec2Error {
        what,
        message: DisplayErrorContext(e).to_string(),
    }
}

/// What the workers need of an instance.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: String,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`.
    pub state: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
}

impl Instance {
    fn of(i: &SdkInstance) -> Self {
        Self {
            id: i.instance_id().unwrap_or_default().to_string(),
            state: i
                .state()
                .and_then(|s| s.name())
                .map_or("unknown", InstanceStateName::as_str)
                .to_string(),
            private_ip: i.private_ip_address().map(str::to_string),
            public_ip: i.public_ip_address().map(str::to_string),
        }
    }

    /// Gone or going: it will never run again.
    pub fn ended(&self) -> bool {
        matches!(self.state.as_str(), "shutting-down" | "terminated")
    }
}

/// What `run` makes an instance from.
pub struct RunRequest<'a> {
    pub profile: &'a LaunchProfile,
    pub server: &'a str,
    pub action_id: i64,
    pub tags: &'a [(String, String)],
    pub user_data: &'a str,
}

async fn describe(
    call: aws_sdk_ec2::operation::describe_instances::builders::DescribeInstancesFluentBuilder,
) -> Result<Vec<Instance>, Ec2Error> {
    let out = call.send().await.map_err(failed("DescribeInstances"))?;
    Ok(out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(Instance::of)
        .collect())
}

#[derive(Clone)]
pub struct Ec2 {
    client: Client,
}

impl Ec2 {
    /// A client for `SA_EC2_ENDPOINT` (an emulator; default AWS's own) in `SA_EC2_REGION`, with
    /// `SA_EC2_ACCESS_KEY_ID`/`SA_EC2_SECRET_ACCESS_KEY` or the AWS default chain.
    pub async fn new(cfg: &Config) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(cfg.ec2_region.clone()));
        if let (Some(id), Some(secret)) = (&cfg.ec2_access_key_id, &cfg.ec2_secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.expose_secret().to_string(),
                None,
                None,
                "serveractions",
            ));
        }
        if let Some(e) = &cfg.ec2_endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        Self {
            client: Client::new(&loader.load().await),
        }
    }

    /// The instance launch `action_id` made, unless it has ended.
    pub async fn launched_by(&self, action_id: i64) -> Result<Option<Instance>, Ec2Error> {
        let call = self.client.describe_instances().filters(
            Filter::builder()
                .name(format!("tag:{LAUNCH_TAG}"))
                .values(action_id.to_string())
                .build(),
        );
        Ok(describe(call).await?.into_iter().find(|i| !i.ended()))
    }

    pub async fn run(&self, r: &RunRequest<'_>) -> Result<Instance, Ec2Error> {
        let p = r.profile;
        let mut tags = vec![
            Tag::builder().key("Name").value(r.server).build(),
            Tag::builder()
                .key(LAUNCH_TAG)
                .value(r.action_id.to_string())
                .build(),
            Tag::builder().key(SERVER_TAG).value(r.server).build(),
        ];
        tags.extend(
            r.tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build()),
        );
        let mut call = self
            .client
            .run_instances()
            .image_id(&p.image_id)
            .instance_type(InstanceType::from(p.instance_type.as_str()))
            .subnet_id(&p.subnet_id)
            .set_security_group_ids(
                (!p.security_group_ids.is_empty()).then(|| p.security_group_ids.clone()),
            )
            .min_count(1)
            .max_count(1)
            // AWS returns the same instance for the same token; emulators may not, hence the
            // tag look-up before this call.
            .client_token(format!("serveractions-launch-{}", r.action_id))
            .user_data(base64::engine::general_purpose::STANDARD.encode(r.user_data))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags))
                    .build(),
            );
        if let Some(name) = &p.iam_instance_profile {
            call = call.iam_instance_profile(
                IamInstanceProfileSpecification::builder()
                    .name(name)
                    .build(),
            );
        }
        let out = call.send().await.map_err(failed("RunInstances"))?;
        out.instances()
            .first()
            .map(Instance::of)
            .ok_or_else(|| Ec2Error {
                what: "RunInstances",
                message: "the answer names no instance".into(),
            })
    }

    pub async fn instance(&self, id: &str) -> Result<Option<Instance>, Ec2Error> {
        let call = self.client.describe_instances().instance_ids(id);
        Ok(describe(call).await?.into_iter().next())
    }

    /// The instance's user data, decoded.
    pub async fn user_data(&self, id: &str) -> Result<Option<String>, Ec2Error> {
        let out = self
            .client
            .describe_instance_attribute()
            .instance_id(id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .map_err(failed("DescribeInstanceAttribute"))?;
        Ok(out
            .user_data()
            .and_then(|v| v.value())
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The console output so far, decoded.
    pub async fn console(&self, id: &str) -> Result<String, Ec2Error> {
        let out = self
            .client
            .get_console_output()
            .instance_id(id)
            .latest(true)
            .send()
            .await
            .map_err(failed("GetConsoleOutput"))?;
        Ok(out
            .output()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    }

    /// Stop it at once (`Force`: no clean shutdown): the fence of a dead master.
    pub async fn stop(&self, id: &str) -> Result<(), Ec2Error> {
        self.client
            .stop_instances()
            .instance_ids(id)
            .force(true)
            .send()
            .await
            .map_err(failed("StopInstances"))
            .map(drop)
    }

    pub async fn terminate(&self, id: &str) -> Result<(), Ec2Error> {
        self.client
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(failed("TerminateInstances"))
            .map(drop)
    }
}
