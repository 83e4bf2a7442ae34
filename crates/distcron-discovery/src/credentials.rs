//! A client interceptor that presents a bearer token on every call.

use tonic::metadata::MetadataValue;

/// Adds `authorization: Bearer <token>` to each request (nothing when there is no token).
#[derive(Debug, Clone, Default)]
pub struct BearerToken {
    value: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl BearerToken {
    /// Presents `token`, if any. A token that is not valid header text is refused.
    pub fn new(token: Option<&str>) -> Result<Self, crate::DiscoveryError> {
        let value = token
            .filter(|t| !t.is_empty())
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| crate::DiscoveryError::BadToken)
            })
            .transpose()?;
        Ok(Self { value })
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
