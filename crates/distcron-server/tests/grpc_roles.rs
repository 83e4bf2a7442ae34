//! Every gRPC method distcron serves has its role in `distcron_auth::GRPC_METHODS`, and the table
//! names no method that is not served: a new RPC cannot fall back to some default role.

use std::collections::BTreeSet;

use prost::Message;

#[test]
fn every_served_method_has_a_declared_role() {
    let set = prost_types::FileDescriptorSet::decode(distcron_proto::FILE_DESCRIPTOR_SET)
        .unwrap_or_else(|e| panic!("the served descriptor set does not decode: {e}"));
    let served: BTreeSet<String> = set
        .file
        .iter()
        .flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| {
                    format!("{}.{}/{}", file.package(), service.name(), method.name())
                })
            })
        })
        .collect();
    assert!(served.len() >= 10, "{served:?}");
    let declared: BTreeSet<String> = distcron_auth::GRPC_METHODS
        .iter()
        .map(|(method, _)| (*method).to_owned())
        .collect();
    assert_eq!(
        served, declared,
        "served methods (left) and distcron_auth::GRPC_METHODS (right) differ"
    );
}
