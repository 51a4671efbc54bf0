//! Operations: fleet.

use poem_openapi::OpenApi;

/// The fleet endpoints.
#[derive(Debug)]
pub struct OpsFleetApi;

#[OpenApi(
    prefix_path = "/api/v1/ops",
    tag = "crate::routes::ApiTags::Operations"
)]
impl OpsFleetApi {}
