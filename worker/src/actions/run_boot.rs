//! `run_boot`: a server template's boot scripts in order, each a step of the log, stopping at
//! the first that fails.

use shared::spec::RunBootParams;

use super::{ActionError, Ctx};
use crate::scripts;

pub async fn run(ctx: &Ctx<'_>, p: &RunBootParams) -> Result<i32, ActionError> {
    let template = p.template.as_ref().map_or("?".into(), |t| {
        format!("{} revision {}", t.name, t.revision.unwrap_or(0))
    });
    scripts::run_steps(ctx, &format!("template {template} boot"), &p.steps).await
}
